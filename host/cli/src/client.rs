//! The HTTP client the CLI uses to talk to a running node.

use std::fmt::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::Url;
use serde_json::Value;

use anocast::Decision;
use anocast::DispatchOptions;
use anocast::Topic;

/// A running node's HTTP API.
pub struct Client {
    base: Url,
    http: reqwest::Client,
}

/// The `Authorization` header of `token`, marked sensitive (kept out of
/// reqwest's debug output).
fn bearer(token: &anocast::Secret) -> anyhow::Result<reqwest::header::HeaderValue> {
    let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
        .map_err(|_| anyhow::anyhow!("the API token holds characters a header cannot carry"))?;
    value.set_sensitive(true);
    Ok(value)
}

impl Client {
    /// A client of the node at `url` (`http://host:port`), sending `token`
    /// with every request when there is one.
    pub fn new(url: &str, token: Option<anocast::Secret>) -> anyhow::Result<Self> {
        let base = Url::parse(url).with_context(|| format!("invalid --url {url:?}"))?;
        if !matches!(base.scheme(), "http" | "https") || base.host().is_none() {
            bail!("invalid --url {url:?}: expected http://HOST:PORT");
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = &token {
            headers.insert(reqwest::header::AUTHORIZATION, bearer(token)?);
        }
        let http =
            reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).default_headers(headers).build()?;
        Ok(Client { base, http })
    }

    fn url(&self, path: &str) -> anyhow::Result<Url> {
        self.base.join(path).with_context(|| format!("cannot build a URL for {path}"))
    }

    /// Dispatches through the node; returns the outcome JSON.
    pub async fn dispatch(&self, topic: &Topic, payload: Vec<u8>, options: &DispatchOptions) -> anyhow::Result<Value> {
        let mut url = self.url(&format!("v1/dispatch/{topic}"))?;
        url.query_pairs_mut()
            .append_pair("timeout_ms", &options.timeout.as_millis().to_string())
            .append_pair("grace_ms", &options.grace.as_millis().to_string())
            .append_pair("settle", options.settle.as_str());
        let request = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, &options.content_type)
            .body(payload)
            // The node answers by the deadline; allow for the round trip.
            .timeout(options.timeout + Duration::from_secs(10));
        self.send(request).await
    }

    /// The node's plugin list.
    pub async fn plugins(&self) -> anyhow::Result<Value> {
        self.send(self.http.get(self.url("v1/plugins")?).timeout(Duration::from_secs(10))).await
    }

    /// Publishes a decision for a dispatch's staged writes, through the node.
    pub async fn settle(&self, request_id: &str, decision: Decision) -> anyhow::Result<Value> {
        let mut url = self.url("v1/settle/")?;
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("the node URL cannot take a path"))?
            .pop_if_empty()
            .push(request_id)
            .push(decision.as_str());
        self.send(self.http.post(url).timeout(Duration::from_secs(10))).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = request.send().await.map_err(|e| {
            let reason = if e.is_connect() {
                "connection failed".to_owned()
            } else if e.is_timeout() {
                "no answer in time".to_owned()
            } else {
                e.to_string()
            };
            anyhow::anyhow!(
                "cannot reach the anocast node at {} ({reason}); is `anocast serve` running there?",
                self.base
            )
        })?;
        let status = response.status();
        let body = response.bytes().await.context("the node's answer was cut short")?;
        let json: Value = serde_json::from_slice(&body)
            .with_context(|| format!("the node at {} answered {status} with something that is not JSON", self.base))?;
        if !status.is_success() {
            let message = json["error"].as_str().unwrap_or("no reason given");
            bail!("the node answered {status}: {message}");
        }
        Ok(json)
    }
}

/// The mesh's nodes and their plugins, from a node's `GET /v1/plugins`.
pub fn mesh_table(answer: &Value) -> String {
    let empty = Vec::new();
    let nodes = answer["mesh"].as_array().unwrap_or(&empty);
    let mut out = String::new();
    if nodes.is_empty() {
        let _ = writeln!(out, "\nmesh: none (embedded mode, or no live node registered)");
        return out;
    }
    let _ = writeln!(out, "\nmesh: {} live node(s)", nodes.len());
    for node in nodes {
        let plugins = node["plugins"].as_array().unwrap_or(&empty);
        let list: Vec<String> = plugins
            .iter()
            .map(|p| format!("{}@{}", p["name"].as_str().unwrap_or("?"), p["version"].as_str().unwrap_or("?")))
            .collect();
        let _ = writeln!(
            out,
            "  {}: {}",
            node["id"].as_str().unwrap_or("?"),
            if list.is_empty() { "no plugins".to_owned() } else { list.join(", ") }
        );
    }
    out
}

/// The plugin list as a table, then the files that failed to load.
pub fn plugins_table(answer: &Value) -> String {
    let empty = Vec::new();
    let plugins = answer["plugins"].as_array().unwrap_or(&empty);
    let mut rows = vec![[
        "NAME".to_owned(),
        "VERSION".to_owned(),
        "TOPICS".to_owned(),
        "DIGEST".to_owned(),
        "IN-FLIGHT".to_owned(),
    ]];
    for p in plugins {
        let topics: Vec<&str> = p["topics"].as_array().unwrap_or(&empty).iter().filter_map(Value::as_str).collect();
        let digest = p["digest"].as_str().unwrap_or_default();
        rows.push([
            p["name"].as_str().unwrap_or_default().to_owned(),
            p["version"].as_str().unwrap_or_default().to_owned(),
            topics.join(","),
            digest.chars().take(19).collect(),
            match p["draining"].as_array().map(Vec::len).unwrap_or(0) {
                0 => p["in_flight"].as_u64().unwrap_or(0).to_string(),
                n => format!("{} (+{n} older version(s) finishing)", p["in_flight"].as_u64().unwrap_or(0)),
            },
        ]);
    }
    let widths: Vec<usize> = (0..5).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    let _ = writeln!(out, "node {}: {} plugin(s)", answer["node"].as_str().unwrap_or("?"), plugins.len());
    for row in &rows {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:w$}")).collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    let errors = answer["errors"].as_array().unwrap_or(&empty);
    if !errors.is_empty() {
        let _ = writeln!(out, "\nnot loaded:");
        for e in errors {
            let file = e["file"].as_str().unwrap_or("?");
            let serving = plugins.iter().any(|p| p["file"].as_str() == Some(file));
            let note = if serving { " (its previous version keeps serving)" } else { "" };
            let _ = writeln!(out, "  {file}: {}{note}", e["error"].as_str().unwrap_or("?"));
        }
    }
    out
}
