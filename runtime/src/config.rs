//! The configuration file of `sluice serve` (TOML, kebab-case keys, unknown keys are an
//! error). Every field has a default; an empty file is a valid configuration.
//!
//! ```toml
//! slots = 16                       # executions at once, per lane
//! kept-payloads = 65_536           # waiting jobs' payloads kept in memory (~0.5 KB each)
//! fairness = "cost"                # turns between orgs charged by cost, or "job-count"
//! database = "postgres://sluice@db.internal/sluice"   # several nodes; default: SQLite
//! [runaway]                       # when a definition is flagged and throttled
//! surge = 10                       # its recent rate against its baseline
//! [cluster]
//! lease-ttl-seconds = 30           # a dead node's orgs are taken over within this
//! [default-quotas]                 # every org and lane the file does not name
//! max-threads = 4
//! [engine.default-limits]
//! fuel = 10_000_000_000
//! [api]
//! listen = "127.0.0.1:7878"
//! [callbacks]
//! allow-networks = ["10.20.0.0/16"]   # private targets the operator trusts
//! [[org]]
//! name = "contoso"
//! outbound-allow-networks = ["10.20.0.0/16"]   # its plug-ins' HTTP may reach these too
//! max-plugin-bytes = 67_108_864    # its plug-ins may be larger than [engine]'s limit
//! notify-url = "https://ops.contoso.example/sluice"   # told of its runaway definitions
//! [org.regular]                    # this org's regular-lane quotas
//! max-threads = 2
//! max-throughput = 100
//! ```

use serde::{Deserialize, Serialize};

use crate::engine::EngineSettings;
use crate::jobs::Quotas;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ServeConfig {
    /// Executions this node runs at once, per lane. Default 16.
    pub slots: usize,
    /// Synchronous executions (sync steps, custom-API runs) one org may run at once.
    /// Default 8; one more answers 429 `sync-quota-exceeded`.
    pub sync_per_org: u32,
    /// Waiting jobs whose payloads the node keeps in memory for their start (about
    /// 0.5 KB each); past them, jobs are read back from the store ahead of need.
    /// Default 65,536.
    pub kept_payloads: usize,
    /// How turns between orgs (and between an org's definitions) are counted on a lane:
    /// `cost` (fuel, with host-call time folded in; the default) or `job-count` (one
    /// turn per job, to measure against).
    pub fairness: crate::service::Fairness,
    /// Quotas of every org and lane not set below (see [`Quotas`] for each default).
    pub default_quotas: Quotas,
    /// The sandbox: stack, plug-in size, pool size, and the default execution limits.
    pub engine: EngineSettings,
    /// How long finished jobs and trace logs are kept.
    pub retention: crate::service::Retention,
    /// The HTTP API: address, public URL, body limit.
    pub api: crate::api::ApiSettings,
    /// Background operations' callbacks: tries, backoff, timeout, allowed networks.
    pub callbacks: crate::callbacks::CallbackSettings,
    /// Organisations to create at start (if missing), with their quotas.
    #[serde(rename = "org")]
    pub orgs: Vec<OrgConfig>,
    /// A PostgreSQL database (`postgres://user@host:port/database`) that several nodes
    /// share; without it, the data directory's embedded SQLite file (one node).
    pub database: Option<String>,
    /// How nodes on one database share the orgs.
    pub cluster: ClusterConfig,
    /// When a definition is flagged as a runaway and throttled.
    pub runaway: crate::service::RunawayRule,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ClusterConfig {
    /// Seconds a node's hold on an org lasts without renewal (renewed every third of
    /// it): a dead node's orgs and running jobs are taken over within this. Default 30.
    pub lease_ttl_seconds: u32,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig { lease_ttl_seconds: 30 }
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            slots: 16,
            sync_per_org: 8,
            kept_payloads: 65_536,
            fairness: crate::service::Fairness::Cost,
            default_quotas: Quotas::default(),
            engine: EngineSettings::default(),
            retention: crate::service::Retention::default(),
            api: crate::api::ApiSettings::default(),
            callbacks: crate::callbacks::CallbackSettings::default(),
            orgs: Vec::new(),
            database: None,
            cluster: ClusterConfig::default(),
            runaway: crate::service::RunawayRule::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OrgConfig {
    pub name: String,
    #[serde(default)]
    pub priority: Option<Quotas>,
    #[serde(default)]
    pub regular: Option<Quotas>,
    /// Networks beyond the public internet this org's plug-ins may reach over HTTP, IP
    /// literals in them included (e.g. `["10.20.0.0/16"]` for an internal ERP). Default
    /// none: public DNS names only.
    #[serde(default)]
    pub outbound_allow_networks: Vec<ipnet::IpNet>,
    /// The largest plug-in this org may upload, in bytes, over `[engine]
    /// max-plugin-bytes` (larger or smaller). Default: the engine's.
    #[serde(default)]
    pub max_plugin_bytes: Option<u64>,
    /// Where the org is told, by a signed POST (Standard Webhooks, the org's webhook
    /// secret), when one of its definitions is flagged as a runaway and throttled, and
    /// when it is released. Checked like callback targets (`[callbacks]
    /// allow-networks`). Default none: the log and the dashboard only.
    #[serde(default)]
    pub notify_url: Option<String>,
}

impl ServeConfig {
    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_defaults_and_unknown_keys_are_refused() {
        assert_eq!(ServeConfig::parse("").unwrap(), ServeConfig::default());
        let config =
            ServeConfig::parse("slots = 4\n[[org]]\nname = \"contoso\"\n[org.regular]\nmax-threads = 2\n")
                .unwrap();
        assert_eq!(config.orgs[0].regular.unwrap().max_threads, 2);
        assert_eq!(config.orgs[0].regular.unwrap().max_throughput, Quotas::default().max_throughput);
        let error = ServeConfig::parse("slotz = 4").unwrap_err().to_string();
        assert!(error.contains("unknown field `slotz`"), "{error}");
    }

    #[test]
    fn the_files_defaults_are_the_services() {
        let (file, service) = (ServeConfig::default(), crate::service::Options::default());
        assert_eq!((file.slots, file.sync_per_org), (service.slots, service.sync_per_org));
        assert_eq!(file.kept_payloads, service.kept_payloads);
        assert_eq!(ServeConfig::parse("kept-payloads = 1_000").unwrap().kept_payloads, 1_000);
    }
}
