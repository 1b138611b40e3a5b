//! Nested dispatch latency (issue 6): a two-stage dispatch (`chain.a`,
//! whose worker dispatches `chain.b` and waits for it) next to the two
//! single dispatches it is made of (`chain.a` and `chain.b` answered at
//! once), measured in alternating rounds of the same run, in embedded mode
//! and over NATS and Redis (one node process-internal, one client).
//!
//! `cargo xtask bench` runs it; `-- --quick` for a short run.

use std::time::Duration;

use anocast::{DispatchOptions, Host, HostConfig, MeshConfig, RuntimeConfig, Topic};
use anocast_tests::bench::{self, Settings, Stats, row, sample};
use anocast_tests::servers::{Nats, Redis};
use anocast_tests::{PluginDir, guests, start_host};

fn main() -> anyhow::Result<()> {
    bench::run(|| nested(Settings::from_args()))
}

/// One dispatch whose single partial must be `expected`.
async fn dispatch(host: &Host, topic: &Topic, payload: &[u8], expected: &str) -> anyhow::Result<()> {
    let options = DispatchOptions { timeout: Duration::from_secs(5), ..DispatchOptions::default() };
    let outcome = host.dispatcher().dispatch(topic.clone(), payload.to_vec(), &options).await?;
    let reply = outcome.partials.first().and_then(|p| p.result.as_ref().ok()).map(|r| String::from_utf8_lossy(r));
    anyhow::ensure!(reply.as_deref() == Some(expected), "unexpected outcome: {}", outcome.to_json());
    Ok(())
}

/// Measures the two-stage dispatch and the two single ones through
/// `client`, in alternating rounds, and prints them.
async fn compare(label: &str, client: &Host, samples: usize) -> anyhow::Result<f64> {
    let (a, b) = (Topic::parse("chain.a")?, Topic::parse("chain.b")?);
    let two_stage_reply = "relay-a[complete: relay-b(depth 1, ancestors 1)]";
    const ROUNDS: usize = 5;
    let (mut singles, mut two_stage) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        singles.extend(
            sample(samples / ROUNDS, || async {
                dispatch(client, &a, b"", "relay-a(depth 0, ancestors 0)").await?;
                dispatch(client, &b, b"", "relay-b(depth 0, ancestors 0)").await
            })
            .await?,
        );
        two_stage.extend(sample(samples / ROUNDS, || dispatch(client, &a, b"chain.b", two_stage_reply)).await?);
    }
    let (singles, two_stage) = (Stats::of(singles), Stats::of(two_stage));
    println!("{label}");
    row("two singles, one after the other", &singles, None);
    row("one two-stage dispatch", &two_stage, Some(singles.p50));
    Ok(two_stage.p50.as_secs_f64() / singles.p50.as_secs_f64())
}

async fn nested(settings: Settings) -> anyhow::Result<()> {
    println!("anocast nested dispatch benchmark ({} logical CPUs)", std::thread::available_parallelism()?.get());
    println!("floor = the two single dispatches a two-stage one is made of, one after the other, same run\n");
    println!("latency, one at a time                          {:>10} {:>10} {:>12}", "p50", "p99", "p50/floor");

    let dir = PluginDir::with(&[guests::RELAY_A, guests::RELAY_B])?;
    let host = start_host(&dir, RuntimeConfig::default()).await?;
    let embedded = compare("embedded", &host, settings.latency_samples / 2).await?;
    drop(host);

    let (nats, redis) = (Nats::start()?, Redis::start()?);
    let data = tempfile::tempdir()?;
    let mut mesh = MeshConfig::new(&nats.url(), &redis.url());
    mesh.trust_mesh = true;
    mesh.data_dir = Some(data.path().to_owned());
    mesh.trust = vec![anocast_tests::client_key().trust.clone()];
    let config = |plugins: Option<&PluginDir>, id: &str| HostConfig {
        plugins: plugins.map(|d| d.path().to_owned()),
        node_id: id.into(),
        mesh: Some(mesh.clone()),
        ..HostConfig::default()
    };
    let _node = Host::start(config(Some(&dir), "bench-node")).await?;
    let mut client = config(None, anocast_tests::CLIENT_ID);
    if let Some(mesh) = &mut client.mesh {
        mesh.key = Some(anocast_tests::client_key().key.clone());
    }
    let client = Host::start(client).await?;
    anyhow::ensure!(client.mesh_nodes().len() == 1, "the client does not see the node");
    let distributed = compare("distributed (NATS + Redis, loopback)", &client, settings.latency_samples / 8).await?;

    println!("\nthe second stage costs what a dispatch from outside costs: two-stage / (two singles)");
    println!("  embedded {embedded:.2}x, distributed {distributed:.2}x (1.00x: no overhead for nesting)");
    Ok(())
}
