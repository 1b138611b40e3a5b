//! The HTTP API, served in-process on a free port.

use std::sync::Arc;

use anocast::RuntimeConfig;
use anocast_tests::{PluginDir, guests, start_host};
use serde_json::Value;

struct Api {
    base: String,
    http: reqwest::Client,
    _dir: PluginDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve(guests: &[&str], extra: &[(&str, &[u8])]) -> anyhow::Result<Api> {
    let dir = PluginDir::with(guests)?;
    for (name, bytes) in extra {
        dir.write(name, bytes)?;
    }
    let host = Arc::new(start_host(&dir, RuntimeConfig::default()).await?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(anocast::gateway::serve(listener, host, async move {
        let _ = stopped.await;
    }));
    Ok(Api { base, http: reqwest::Client::new(), _dir: dir, _stop: stop })
}

impl Api {
    async fn post(&self, path: &str, body: &[u8]) -> anyhow::Result<(u16, Value)> {
        let response = self.http.post(format!("{}{path}", self.base)).body(body.to_vec()).send().await?;
        Ok((response.status().as_u16(), response.json().await?))
    }

    async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let response = self.http.get(format!("{}{path}", self.base)).send().await?;
        Ok((response.status().as_u16(), response.json().await?))
    }
}

#[tokio::test]
async fn dispatch_answers_the_outcome_json() -> anyhow::Result<()> {
    let api = serve(&[guests::WORD_COUNT, guests::SENTIMENT, guests::MISBEHAVE], &[]).await?;
    let (status, json) = api.post("/v1/dispatch/text.analyze", b"bad bad bug").await?;
    assert_eq!(status, 200);
    assert_eq!(json["status"], "complete");
    assert_eq!(json["partials"][0]["payload"], serde_json::json!({"score": -3, "label": "negative"}));
    assert_eq!(json["partials"][1]["payload"]["words"], 3);
    for field in ["request_id", "topic", "status", "partials", "missing", "elapsed_ms"] {
        assert!(json.get(field).is_some(), "outcome lacks {field}");
    }

    // timeout_ms and grace_ms are honoured.
    let (status, json) = api.post("/v1/dispatch/misbehave.sleep?timeout_ms=300&grace_ms=100", b"5000").await?;
    assert_eq!(status, 200);
    assert_eq!(json["status"], "timed_out");
    assert_eq!(json["missing"], serde_json::json!(["test/misbehave@0.1.0"]));
    let (_, json) = api.post("/v1/dispatch/nobody.home?grace_ms=50", b"").await?;
    assert_eq!(json["status"], "no_interest");
    // A manual settle is accepted for any request id (nodes that staged
    // nothing for it ignore it).
    let (status, json) = api.post("/v1/settle/r-1/abort", b"").await?;
    assert_eq!((status, &json), (202, &serde_json::json!({"request_id": "r-1", "settle": "abort"})));
    Ok(())
}

#[tokio::test]
async fn malformed_requests_get_a_4xx_with_a_json_error() -> anyhow::Result<()> {
    let api = serve(&[guests::ECHO], &[]).await?;
    for (path, expected) in [
        ("/v1/dispatch/a..b", "invalid topic"),
        ("/v1/dispatch/a.*", "wildcards"),
        ("/v1/dispatch/echo?timeout_ms=soon", "invalid query"),
        ("/v1/dispatch/echo?color=red", "unknown field"),
        ("/v1/dispatch/echo?timeout_ms=0", "timeout must be"),
        ("/v1/dispatch/echo?timeout_ms=99999999999", "timeout must be"),
        ("/v1/dispatch/echo?settle=sometimes", "unknown settle policy"),
        ("/v1/settle/r-1/maybe", "the decision must be commit or abort"),
        ("/v1/settle/a,b/commit", "invalid request id"),
        // A newline would break the NATS header the decision travels in.
        ("/v1/settle/a%0Ab/commit", "invalid request id"),
    ] {
        let (status, json) = api.post(path, b"x").await?;
        assert_eq!(status, 400, "{path}");
        let error = json["error"].as_str().unwrap_or_default();
        assert!(error.contains(expected), "{path}: {error}");
    }
    let (status, json) = api.post("/v1/dispatch/echo", &vec![0u8; anocast::gateway::MAX_PAYLOAD + 1]).await?;
    assert_eq!(status, 413);
    assert!(json["error"].is_string());
    let (status, json) = api.get("/v2/anything").await?;
    assert_eq!(status, 404);
    assert!(json["error"].is_string());
    let (status, json) = api.get("/v1/dispatch/echo").await?;
    assert_eq!(status, 405);
    assert!(json["error"].is_string());
    Ok(())
}

#[tokio::test]
async fn plugins_and_health_are_listed() -> anyhow::Result<()> {
    let api = serve(&[guests::ECHO, guests::BAD_DESCRIBE], &[("junk.wasm", b"junk")]).await?;
    let (status, json) = api.get("/healthz").await?;
    assert_eq!((status, json), (200, serde_json::json!({"status": "ok"})));

    let (status, json) = api.get("/v1/plugins").await?;
    assert_eq!(status, 200);
    assert_eq!(json["node"], "test");
    let plugins = json["plugins"].as_array().expect("plugins");
    assert_eq!(plugins.len(), 1);
    assert_eq!(plugins[0]["name"], "echo");
    assert_eq!(plugins[0]["topics"][0], "echo");
    assert!(plugins[0]["digest"].as_str().is_some_and(|d| d.starts_with("sha256:") && d.len() == 71));
    let errors = json["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 2);
    let text = serde_json::to_string(errors)?;
    assert!(text.contains("bad_describe.wasm") && text.contains("invalid topic pattern"), "{text}");
    assert!(text.contains("junk.wasm") && text.contains("not a WebAssembly file"), "{text}");
    Ok(())
}
