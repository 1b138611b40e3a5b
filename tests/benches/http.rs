//! The embedded HTTP path, and what the API's guards cost on it.
//!
//! Floor: the same dispatch served by a bare axum router under
//! `axum::serve` (no token, no Host or Origin check, no limits, no
//! timeouts), as the API was served before it was guarded. Measured in
//! alternating rounds against the guarded API without a token (loopback)
//! and with one, over one keep-alive connection each, one request at a
//! time.

use std::sync::Arc;

use anocast::gateway::{GatewayConfig, HttpStats};
use anocast::{DispatchOptions, Host, RuntimeConfig, Secret, Topic};
use anocast_tests::bench::{self, Settings, Stats, sample};
use anocast_tests::{PluginDir, guests, start_host};
use axum::extract::State;

fn main() -> anyhow::Result<()> {
    bench::run(|| http(Settings::from_args()))
}

const TOKEN: &str = "bench-token-0123456789abcdef";

/// The floor's server: one route, the dispatch, nothing else.
async fn bare(host: Arc<Host>) -> anyhow::Result<String> {
    async fn dispatch(State(host): State<Arc<Host>>, body: bytes::Bytes) -> String {
        let options = DispatchOptions { content_type: "text/plain".into(), ..DispatchOptions::default() };
        let topic = Topic::parse("bench.one").expect("topic");
        match host.dispatcher().dispatch(topic, body.to_vec(), &options).await {
            Ok(outcome) => outcome.to_json(),
            Err(err) => err.to_string(),
        }
    }
    let app = axum::Router::new().route("/v1/dispatch/bench.one", axum::routing::post(dispatch)).with_state(host);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(base)
}

async fn guarded(host: Arc<Host>, config: GatewayConfig) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    config.check(listener.local_addr()?)?;
    let stats = Arc::new(HttpStats::default());
    tokio::spawn(anocast::gateway::serve(listener, host, config, stats, std::future::pending()));
    Ok(base)
}

async fn post(http: &reqwest::Client, url: &str, token: Option<&str>) -> anyhow::Result<()> {
    let mut request = http.post(url).header("content-type", "text/plain").body("hello, anocast");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    anyhow::ensure!(response.status().is_success(), "status {}", response.status());
    let body = response.bytes().await?;
    anyhow::ensure!(body.windows(10).any(|w| w == b"\"complete\""), "not complete: {}", String::from_utf8_lossy(&body));
    Ok(())
}

async fn http(settings: Settings) -> anyhow::Result<()> {
    let dir = PluginDir::with(&[guests::ECHO])?;
    let host = Arc::new(start_host(&dir, RuntimeConfig::default()).await?);
    let floor = bare(host.clone()).await?;
    let open = guarded(host.clone(), GatewayConfig::default()).await?;
    let with_token =
        guarded(host.clone(), GatewayConfig { token: Some(Secret::new(TOKEN)), ..GatewayConfig::default() }).await?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(1).build()?;
    let url = |base: &str| format!("{base}/v1/dispatch/bench.one");
    let (floor_url, open_url, token_url) = (url(&floor), url(&open), url(&with_token));

    println!("anocast HTTP API benchmark ({} logical CPUs)", std::thread::available_parallelism()?.get());
    println!("floor = the same dispatch behind a bare axum router (no guards), same run, alternating rounds\n");
    println!(
        "latency, one at a time ({} samples)         {:>10} {:>10} {:>12}",
        settings.latency_samples, "p50", "p99", "p50/floor"
    );
    const ROUNDS: usize = 5;
    let per_round = settings.latency_samples / ROUNDS;
    let (mut f, mut o, mut t) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        f.extend(sample(per_round, || post(&http, &floor_url, None)).await?);
        o.extend(sample(per_round, || post(&http, &open_url, None)).await?);
        t.extend(sample(per_round, || post(&http, &token_url, Some(TOKEN))).await?);
    }
    let (f, o, t) = (Stats::of(f), Stats::of(o), Stats::of(t));
    let row = |name: &str, s: &Stats, floor: Option<&Stats>| {
        let ratio = floor.map(|fl| format!("{:.2}x", s.p50.as_secs_f64() / fl.p50.as_secs_f64())).unwrap_or_default();
        println!("  {name:<38} {:>10.1?} {:>10.1?} {ratio:>12}", s.p50, s.p99);
    };
    row("floor: bare axum, no guards", &f, None);
    row("guarded API, loopback, no token", &o, Some(&f));
    row("guarded API, bearer token", &t, Some(&f));
    Ok(())
}
