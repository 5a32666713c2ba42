//! The `sluice` client commands: the HTTP API from the command line. The server comes
//! from `--server`, `$SLUICE_SERVER` or the client configuration file; the token from
//! `$SLUICE_TOKEN` or that file (`$SLUICE_CLIENT_CONFIG`, else
//! `~/.config/sluice/client.toml`, with `server = "…"` and `token = "…"`). Output is a
//! table by default and the API's JSON with `--json`.

mod commands;
mod table;

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use reqwest::Method;
use serde_json::Value as Json;

pub use commands::{
    ApiCommand, EventCommand, JobCommand, JobDidNotSucceed, OperationCommand, OrgCommand, QuotasCommand,
    RecordsCommand, StepCommand, WorkflowCommand, run_api, run_event, run_job, run_operation, run_org,
    run_plugin_remote, run_quotas, run_records, run_step, run_workflow,
};

/// Where the server is and how to print; every client command takes these.
#[derive(clap::Args, Debug, Clone)]
pub struct Remote {
    /// The server's base URL (default: $SLUICE_SERVER, the config file, else
    /// http://127.0.0.1:7878).
    #[arg(long, global = true)]
    server: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ClientConfig {
    server: Option<String>,
    token: Option<String>,
}

fn config_path() -> Option<PathBuf> {
    let env = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    env("SLUICE_CLIENT_CONFIG")
        .or_else(|| env("XDG_CONFIG_HOME").map(|d| d.join("sluice/client.toml")))
        .or_else(|| env("HOME").map(|d| d.join(".config/sluice/client.toml")))
}

fn read_config() -> anyhow::Result<ClientConfig> {
    let Some(path) = config_path().filter(|p| p.exists()) else { return Ok(ClientConfig::default()) };
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{} is not a valid client configuration", path.display()))
}

/// A connection to one server with one token.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    pub json: bool,
}

impl Client {
    pub fn new(remote: &Remote) -> anyhow::Result<Client> {
        let config = read_config()?;
        let env = |name| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let base = remote
            .server
            .clone()
            .or_else(|| env("SLUICE_SERVER"))
            .or(config.server)
            .unwrap_or_else(|| "http://127.0.0.1:7878".into());
        let Some(token) = env("SLUICE_TOKEN").or(config.token) else {
            bail!(
                "no token: set SLUICE_TOKEN or put `token = \"…\"` in {:?}",
                config_path().unwrap_or_default()
            )
        };
        let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(300)).build()?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: token.trim().to_owned(),
            json: remote.json,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    async fn finish(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Json> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = response.status();
        let text = response.text().await?;
        let body: Json = if text.is_empty() {
            Json::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Json::String(text))
        };
        if !status.is_success() {
            let code = table::clean(body["error"]["code"].as_str().unwrap_or("error"));
            let message = body["error"]["message"].as_str().map_or_else(|| body.to_string(), table::clean);
            bail!("{status} {code}: {message}");
        }
        Ok(body)
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<&Json>) -> anyhow::Result<Json> {
        let mut request = self.http.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(body);
        }
        self.finish(request).await
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Json> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Json) -> anyhow::Result<Json> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn upload(&self, path: &str, bytes: Vec<u8>) -> anyhow::Result<Json> {
        let request = self.http.post(self.url(path)).header("content-type", "application/wasm").body(bytes);
        self.finish(request).await
    }

    /// Prints an answer: its JSON, or `table` of it.
    pub fn print(&self, body: &Json, table: impl FnOnce(&Json) -> String) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(body).expect("JSON prints"));
        } else {
            print!("{}", table(body));
        }
    }
}
