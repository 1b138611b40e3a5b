//! The HTTP API, served in-process on a free port.

use std::sync::Arc;

use anocast::RuntimeConfig;
use anocast::gateway::GatewayConfig;
use anocast_tests::{PluginDir, guests, start_host};
use serde_json::Value;

struct Api {
    base: String,
    http: reqwest::Client,
    _dir: PluginDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve(guests: &[&str], extra: &[(&str, &[u8])]) -> anyhow::Result<Api> {
    serve_with(guests, extra, GatewayConfig::default()).await
}

/// [`serve`], guarded and bounded as `config` says.
async fn serve_with(guests: &[&str], extra: &[(&str, &[u8])], config: GatewayConfig) -> anyhow::Result<Api> {
    let dir = PluginDir::with(guests)?;
    for (name, bytes) in extra {
        dir.write(name, bytes)?;
    }
    let host = Arc::new(start_host(&dir, RuntimeConfig::default()).await?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    config.check(listener.local_addr()?)?;
    let stats = Arc::new(anocast::gateway::HttpStats::default());
    tokio::spawn(anocast::gateway::serve(listener, host, config, stats, async move {
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

const TOKEN: &str = "0123456789abcdef-test-token";

#[tokio::test]
async fn a_token_guards_the_routes_that_act() -> anyhow::Result<()> {
    let config = GatewayConfig { token: Some(anocast::Secret::new(TOKEN)), ..GatewayConfig::default() };
    let api = serve_with(&[guests::ECHO], &[("junk.wasm", b"junk")], config).await?;
    for auth in [None, Some("Bearer wrong-token-wrong-token"), Some(&*format!("Basic {TOKEN}"))] {
        for path in ["/v1/dispatch/echo", "/v1/settle/r-1/abort"] {
            let mut request = api.http.post(format!("{}{path}", api.base)).body("hi");
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            let response = request.send().await?;
            assert_eq!(response.status().as_u16(), 401, "{path} with {auth:?}");
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            let json: Value = response.json().await?;
            assert!(json["error"].as_str().is_some_and(|e| e.contains("API token")), "{json}");
        }
    }
    let bearer = format!("Bearer {TOKEN}");
    let response = api
        .http
        .post(format!("{}/v1/dispatch/echo", api.base))
        .header("authorization", &bearer)
        .body("hi")
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.json::<Value>().await?["status"], "complete");

    // Health and the plugin list answer without the token, but the list
    // shows whole paths only with it.
    assert_eq!(api.get("/healthz").await?.0, 200);
    let (status, open) = api.get("/v1/plugins").await?;
    assert_eq!(status, 200);
    assert_eq!(open["plugins"][0]["file"], "echo.wasm");
    assert_eq!(open["errors"][0]["file"], "junk.wasm");
    let full: Value =
        api.http.get(format!("{}/v1/plugins", api.base)).header("authorization", &bearer).send().await?.json().await?;
    let file = full["plugins"][0]["file"].as_str().unwrap_or_default();
    assert!(file.starts_with('/') && file.ends_with("/echo.wasm"), "{full}");
    assert_eq!(full["http"]["unauthorized"], 6);
    Ok(())
}

#[tokio::test]
async fn cross_site_and_rebinding_requests_are_refused() -> anyhow::Result<()> {
    let config = GatewayConfig { cors_origins: vec!["https://app.example".into()], ..GatewayConfig::default() };
    let api = serve_with(&[guests::ECHO], &[], config).await?;
    let post = |origin: Option<&str>, host: Option<&str>| {
        let mut request = api.http.post(format!("{}/v1/dispatch/echo", api.base)).body("hi");
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        if let Some(host) = host {
            request = request.header("host", host);
        }
        request.send()
    };
    // A page of another site, and a page of an attacker's name that
    // resolves to this node (DNS rebinding), are refused.
    let response = post(Some("https://evil.example"), None).await?;
    assert_eq!(response.status().as_u16(), 403);
    assert!(response.json::<Value>().await?["error"].as_str().is_some_and(|e| e.contains("cross-origin")));
    let response = post(Some("http://evil.example:7700"), Some("evil.example:7700")).await?;
    assert_eq!(response.status().as_u16(), 403);
    assert!(response.json::<Value>().await?["error"].as_str().is_some_and(|e| e.contains("--allowed-host")));
    let response =
        api.http.get(format!("{}/v1/plugins", api.base)).header("sec-fetch-site", "cross-site").send().await?;
    assert_eq!(response.status().as_u16(), 403);

    // The node's own origin, the configured one, and clients that send no
    // Origin (curl, the CLI) pass; the configured origin gets CORS headers.
    let own = api.base.clone();
    assert_eq!(post(Some(&own), None).await?.status().as_u16(), 200);
    let response = post(Some("https://app.example"), None).await?;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["access-control-allow-origin"], "https://app.example");
    assert_eq!(post(None, None).await?.status().as_u16(), 200);
    let preflight = api
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/v1/dispatch/echo", api.base))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization")
        .send()
        .await?;
    assert_eq!(preflight.headers()["access-control-allow-origin"], "https://app.example");
    Ok(())
}

/// Reads from `stream` until the server closes it; returns what came and
/// how long it took.
async fn read_to_close(stream: &mut tokio::net::TcpStream) -> (String, std::time::Duration) {
    use tokio::io::AsyncReadExt;
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(20), stream.read_to_end(&mut answer)).await;
    (String::from_utf8_lossy(&answer).into_owned(), started.elapsed())
}

#[tokio::test]
async fn slow_headers_and_slow_bodies_are_cut_off() -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let config = GatewayConfig {
        header_timeout: std::time::Duration::from_millis(500),
        body_timeout: std::time::Duration::from_millis(800),
        ..GatewayConfig::default()
    };
    let api = serve_with(&[guests::ECHO], &[], config).await?;
    let address = api.base.trim_start_matches("http://").to_owned();

    // Headers that never end: the connection is closed after the header
    // timeout.
    let mut stream = tokio::net::TcpStream::connect(&address).await?;
    stream.write_all(b"POST /v1/dispatch/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1").await?;
    let (_, took) = read_to_close(&mut stream).await;
    assert!(took < std::time::Duration::from_secs(5), "slow headers held the connection for {took:?}");

    // A connection that sends nothing at all is closed the same way.
    let mut idle = tokio::net::TcpStream::connect(&address).await?;
    let (_, took) = read_to_close(&mut idle).await;
    assert!(took < std::time::Duration::from_secs(5), "an idle connection stayed open for {took:?}");

    // A body that never ends: 408 after the body timeout.
    let mut stream = tokio::net::TcpStream::connect(&address).await?;
    stream
        .write_all(b"POST /v1/dispatch/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\nonly a little")
        .await?;
    let (answer, took) = read_to_close(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within"), "{answer}");
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    Ok(())
}

#[tokio::test]
async fn idle_connections_beyond_the_cap_are_closed_at_once() -> anyhow::Result<()> {
    let config = GatewayConfig {
        max_connections: 500,
        header_timeout: std::time::Duration::from_secs(2),
        ..GatewayConfig::default()
    };
    let api = serve_with(&[guests::ECHO], &[], config).await?;
    let address = api.base.trim_start_matches("http://").to_owned();
    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(tokio::net::TcpStream::connect(&address).await?);
    }
    // The first 500 hold their slots; the other 1,500 are closed at once.
    let mut closed_at_once = 0;
    for stream in idle.iter_mut().skip(500) {
        let mut byte = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(std::time::Duration::from_millis(200), stream.peek(&mut byte)).await
        {
            closed_at_once += 1;
        }
    }
    assert_eq!(closed_at_once, 1500);
    // Within the header timeout the idle ones are gone, and the node
    // answers again.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match api.http.get(format!("{}/healthz", api.base)).send().await {
            Ok(response) if response.status().is_success() => break,
            _ if std::time::Instant::now() < until => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            other => anyhow::bail!("the node did not answer again after the idle connections: {other:?}"),
        }
    }
    let (_, json) = api.get("/v1/plugins").await?;
    assert!(json["http"]["connections_refused"].as_u64().is_some_and(|n| n >= 1500), "{json}");
    Ok(())
}

#[tokio::test]
async fn a_saturated_node_answers_503_with_retry_after() -> anyhow::Result<()> {
    let config = GatewayConfig { max_concurrent: 2, ..GatewayConfig::default() };
    let api = Arc::new(serve_with(&[guests::ECHO, guests::MISBEHAVE], &[], config).await?);
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move { api.post("/v1/dispatch/misbehave.sleep?timeout_ms=5000", b"1500").await })
        })
        .collect();
    // Once both are in flight, a third is refused at once, not queued and
    // never reported as no_interest.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let refused = loop {
        let response = api.http.post(format!("{}/v1/dispatch/echo", api.base)).body("hi").send().await?;
        if response.status().as_u16() == 503 {
            break response;
        }
        anyhow::ensure!(std::time::Instant::now() < until, "the node never reported saturation");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(refused.headers()["retry-after"], "1");
    let json: Value = refused.json().await?;
    assert!(json["error"].as_str().is_some_and(|e| e.contains("saturated")), "{json}");
    for task in slow {
        let (status, _) = task.await??;
        assert_eq!(status, 200);
    }
    let (status, json) = api.post("/v1/dispatch/echo", b"hi").await?;
    assert_eq!((status, json["status"].as_str()), (200, Some("complete")));
    Ok(())
}

#[test]
fn a_public_address_without_a_token_is_refused_at_start() -> anyhow::Result<()> {
    let dir = PluginDir::with(&[])?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_anocast-cli-under-test"))
        .args(["serve", "--http", "0.0.0.0:0", "--plugins"])
        .arg(dir.path())
        .env("XDG_DATA_HOME", std::env::temp_dir().join("anocast-tests-data"))
        .env_remove("ANOCAST_API_TOKEN")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not a loopback address, so it needs an API token"), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn a_chunked_body_past_the_limit_is_413() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let api = serve(&[guests::ECHO], &[]).await?;
    let mut stream = tokio::net::TcpStream::connect(api.base.trim_start_matches("http://")).await?;
    // No declared length: the node finds out while reading, one byte past
    // its limit.
    let over = anocast::gateway::MAX_PAYLOAD + 1;
    let head =
        format!("POST /v1/dispatch/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n{over:x}\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&vec![b'x'; over]).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_to_end(&mut answer)).await??;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("larger than this node accepts"), "{answer}");
    Ok(())
}
