//! Per-task cost by plugin language (issue 7): a fresh instance +
//! `interested` + `handle`, called directly, of a Rust plugin
//! (`word-count`) and a Python one (`keywords`, componentize-py) on the
//! same text, and a one-plugin dispatch of each, in the same run; and the
//! time to compile each component (no cache).
//!
//! Only the naive way is measured so far (a fresh instance per task, the
//! pooling allocator as configured for every plugin); the optimised one
//! comes with issue 7. `cargo xtask bench` runs it; `-- --quick` for a
//! short run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anocast::runtime::{Plugin, WitTask};
use anocast::{DispatchOptions, Host, RuntimeConfig, Topic};
use anocast_tests::bench::{self, Settings, Stats, row, sample, wit_task};
use anocast_tests::{PluginDir, guests, start_host};

fn main() -> anyhow::Result<()> {
    bench::run(|| languages(Settings::from_args()))
}

/// One task on a fresh instance, called directly; the reply must be ok.
async fn call(plugin: &Plugin, task: &WitTask) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut instance = plugin.instantiate(Arc::from("bench"), Arc::from("bench"), deadline, None).await?;
    anyhow::ensure!(instance.interested(task).await?, "not interested");
    instance.handle(task).await?.map_err(anyhow::Error::msg)?;
    Ok(())
}

/// A fresh instance, no call: what a task costs before the guest runs.
async fn instantiate(plugin: &Plugin) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    plugin.instantiate(Arc::from("bench"), Arc::from("bench"), deadline, None).await?;
    Ok(())
}

/// One dispatch that must complete with one ok partial.
async fn dispatch(host: &Host, topic: &Topic, text: &[u8]) -> anyhow::Result<()> {
    let options = DispatchOptions { timeout: Duration::from_secs(10), ..DispatchOptions::default() };
    let outcome = host.dispatcher().dispatch(topic.clone(), text.to_vec(), &options).await?;
    anyhow::ensure!(
        outcome.partials.len() == 1 && outcome.partials[0].result.is_ok(),
        "unexpected outcome: {}",
        outcome.to_json()
    );
    Ok(())
}

async fn languages(settings: Settings) -> anyhow::Result<()> {
    let text = b"What a great day: the new release is fast and I love the release".to_vec();
    let task = wit_task("text.analyze", &text);
    let topic = Topic::parse("text.analyze")?;
    println!("anocast per-task cost by language ({} logical CPUs)", std::thread::available_parallelism()?.get());
    println!("naive: a fresh instance per task, the runtime's default configuration\n");

    println!("compiling the component (no cache)");
    let runtime = anocast::Runtime::new(RuntimeConfig::default())?;
    for (label, path) in [("rust: word-count", guests::WORD_COUNT), ("python: keywords", guests::KEYWORDS)] {
        let bytes = std::fs::read(path)?;
        let size = bytes.len();
        let started = Instant::now();
        runtime.load(bytes).await?;
        println!("  {label:<38} {:>10.0} ms   ({} KiB)", started.elapsed().as_secs_f64() * 1e3, size / 1024);
    }

    let n = settings.latency_samples / 10;
    println!("\nlatency, one at a time ({n} samples)           {:>10} {:>10} {:>12}", "p50", "p99", "p50/rust");
    let (rust_dir, py_dir) = (PluginDir::with(&[guests::WORD_COUNT])?, PluginDir::with(&[guests::KEYWORDS])?);
    let rust = start_host(&rust_dir, RuntimeConfig::default()).await?;
    let python = start_host(&py_dir, RuntimeConfig::default()).await?;
    let (rust_plugin, py_plugin) = (rust.plugins().plugins()[0].clone(), python.plugins().plugins()[0].clone());
    const ROUNDS: usize = 5;
    let (mut r, mut p, mut rd, mut pd) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut ri, mut pi) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        ri.extend(sample(n / ROUNDS, || instantiate(&rust_plugin)).await?);
        pi.extend(sample(n / ROUNDS, || instantiate(&py_plugin)).await?);
        r.extend(sample(n / ROUNDS, || call(&rust_plugin, &task)).await?);
        p.extend(sample(n / ROUNDS, || call(&py_plugin, &task)).await?);
        rd.extend(sample(n / ROUNDS, || dispatch(&rust, &topic, &text)).await?);
        pd.extend(sample(n / ROUNDS, || dispatch(&python, &topic, &text)).await?);
    }
    let (r, p, rd, pd) = (Stats::of(r), Stats::of(p), Stats::of(rd), Stats::of(pd));
    let (ri, pi) = (Stats::of(ri), Stats::of(pi));
    row("rust: a fresh instance alone", &ri, None);
    row("python: a fresh instance alone", &pi, Some(ri.p50));
    row("rust: task on a fresh instance", &r, None);
    row("python: task on a fresh instance", &p, Some(r.p50));
    row("rust: one-plugin dispatch", &rd, None);
    row("python: one-plugin dispatch", &pd, Some(rd.p50));
    let ok = p.p50 <= Duration::from_micros(300);
    println!("\ntarget: python per task <= 300 µs: {} {}", bench::us(p.p50), bench::verdict(ok));
    Ok(())
}
