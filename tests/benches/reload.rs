//! Hot reload (issue 5), next to what it cannot avoid, measured in the same
//! run:
//!
//! - from a new version's file landing in a watched plugins folder to that
//!   version answering dispatches, next to loading (compiling, checking,
//!   `describe`) the same component directly; target: at most the load time
//!   + 100 ms, with the watcher's default debounce;
//! - a node's start with ten plugins, with a cold compiled-code cache and a
//!   warm one.
//!
//! `cargo xtask bench` runs it; `-- --quick` for a short run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anocast::DEFAULT_DEBOUNCE;
use anocast::{DispatchOptions, Host, HostConfig, Runtime, RuntimeConfig, Topic};
use anocast_tests::bench::{self, Stats, row, verdict};
use anocast_tests::{ECHOES, PluginDir, guests};

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    bench::run(move || reload(if quick { 6 } else { 20 }))
}

fn config(dir: &PluginDir, cache: Option<&std::path::Path>) -> HostConfig {
    HostConfig {
        plugins: Some(dir.path().to_owned()),
        node_id: "bench".into(),
        runtime: RuntimeConfig { cache_dir: cache.map(|c| c.join("cache")), ..RuntimeConfig::default() },
        mesh: None,
        nesting: Default::default(),
        settle: Default::default(),
    }
}

async fn answer(host: &Host) -> anyhow::Result<Vec<u8>> {
    let options = DispatchOptions { grace: Duration::from_millis(500), ..DispatchOptions::default() };
    let outcome = host.dispatcher().dispatch(Topic::parse("swap")?, Vec::new(), &options).await?;
    outcome.partials.first().and_then(|p| p.result.clone().ok()).ok_or_else(|| anyhow::anyhow!("no answer"))
}

async fn reload(rounds: usize) -> anyhow::Result<()> {
    println!("anocast hot-reload benchmark ({} logical CPUs)", std::thread::available_parallelism()?.get());
    println!("floor = loading the same component directly (compile + check + describe), same run\n");

    // No cache: every swap compiles, as a new build does.
    let dir = PluginDir::with(&[])?;
    std::fs::copy(guests::SWAP_V1, dir.path().join("swap.wasm"))?;
    let host = Arc::new(Host::start(config(&dir, None)).await?);
    let _watch = host.watch_plugins(DEFAULT_DEBOUNCE)?;
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let versions = [(guests::SWAP_V2, b"2.0.0"), (guests::SWAP_V1, b"1.0.0")];
    let (mut loads, mut swaps) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let (guest, version) = versions[round % 2];
        let bytes = std::fs::read(guest)?;
        let started = Instant::now();
        runtime.load(bytes.clone()).await?;
        loads.push(started.elapsed());

        // Written aside and renamed into place, as build tools do.
        let aside = dir.path().join(".swap.wasm.part");
        std::fs::write(&aside, &bytes)?;
        let started = Instant::now();
        std::fs::rename(&aside, dir.path().join("swap.wasm"))?;
        while answer(&host).await? != version {
            anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "version never served");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        swaps.push(started.elapsed());
    }
    let (loads, swaps) = (Stats::of(loads), Stats::of(swaps));
    println!("file write to new version serving ({rounds} swaps, debounce {} ms)", DEFAULT_DEBOUNCE.as_millis());
    println!("  {:<38} {:>10} {:>10} {:>12}", "", "p50", "p99", "p50/floor");
    row("load the component directly", &loads, None);
    row("write -> new version serving", &swaps, Some(loads.p50));
    let over = swaps.p50.saturating_sub(loads.p50);
    println!(
        "  target: at most the load time + 100 ms: {} over {}",
        bench::us(over),
        verdict(over <= Duration::from_millis(100))
    );

    // Ten plugins, cold cache then warm.
    let dir = PluginDir::with(&ECHOES[..10])?;
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for _ in 0..rounds.div_ceil(4).max(3) {
        let data = tempfile::tempdir()?;
        for samples in [&mut cold, &mut warm] {
            let started = Instant::now();
            let host = Host::start(config(&dir, Some(data.path()))).await?;
            samples.push(started.elapsed());
            anyhow::ensure!(host.plugins().loaded.len() == 10, "{:?}", host.plugins().failed);
        }
    }
    let (cold, warm) = (Stats::of(cold), Stats::of(warm));
    println!("\nnode start with 10 plugins ({} starts each)", rounds.div_ceil(4).max(3));
    println!("  {:<38} {:>10} {:>10} {:>12}", "", "p50", "p99", "p50/cold");
    row("cold compiled-code cache", &cold, None);
    row("warm compiled-code cache", &warm, Some(cold.p50));
    Ok(())
}
