//! Per-task cost by plugin language, naive against optimised, in the same
//! run: the `text.analyze` examples in Rust (`word-count`), Python
//! (`keywords`, componentize-py), JavaScript (`reading-time`,
//! componentize-js) and C (`byte-stats`), all four declared stateless.
//!
//! - naive: a fresh instance for every task (`warm_instances = 0`);
//! - optimised: the default runtime, where a stateless plugin's task runs
//!   on a warm instance;
//!
//! each measured as `interested` + `handle` called directly (instance
//! included) and as a one-plugin dispatch. Also: compiling each component
//! without a cache, and loading it again from the compiled-code cache (what
//! a restart costs). `cargo xtask bench` runs it; `-- --quick` for a short
//! run.

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

/// The examples, by language.
const PLUGINS: [(&str, &str); 4] = [
    ("rust", guests::WORD_COUNT),
    ("python", guests::KEYWORDS),
    ("js", guests::READING_TIME),
    ("c", guests::BYTE_STATS),
];

async fn languages(settings: Settings) -> anyhow::Result<()> {
    let text = b"What a great day: the new release is fast and I love the release".to_vec();
    let task = wit_task("text.analyze", &text);
    let topic = Topic::parse("text.analyze")?;
    println!("anocast per-task cost by language ({} logical CPUs)", std::thread::available_parallelism()?.get());
    println!(
        "naive: a fresh instance per task; optimised: a warm instance (the plugins declare themselves stateless)\n"
    );

    let cache = tempfile::tempdir()?;
    println!("{:<40} {:>12} {:>16} {:>10}", "loading the component", "compile", "from the cache", "size");
    for (lang, path) in PLUGINS {
        let bytes = std::fs::read(path)?;
        let size = bytes.len();
        // A runtime per load, as a restarted node has.
        let fresh = || {
            anocast::Runtime::new(RuntimeConfig {
                cache_dir: Some(cache.path().join(lang)),
                ..RuntimeConfig::default()
            })
        };
        let started = Instant::now();
        fresh()?.load(bytes.clone()).await?;
        let compile = started.elapsed();
        let runtime = fresh()?;
        let started = Instant::now();
        runtime.load(bytes).await?;
        let cached = started.elapsed();
        let hits = runtime.cache().map_or(0, |c| c.stats.hits.load(std::sync::atomic::Ordering::Relaxed));
        anyhow::ensure!(hits == 1, "{lang}: the second load did not come from the cache");
        println!(
            "  {lang:<38} {:>9.0} ms {:>13.1} ms {:>7} KiB",
            compile.as_secs_f64() * 1e3,
            cached.as_secs_f64() * 1e3,
            size / 1024
        );
    }

    let n = settings.latency_samples / 10;
    println!("\nlatency, one at a time ({n} samples)           {:>10} {:>10} {:>12}", "p50", "p99", "opt/naive");
    let naive_config = RuntimeConfig { warm_instances: 0, ..RuntimeConfig::default() };
    let mut rows = Vec::new();
    for (lang, path) in PLUGINS {
        let (naive_dir, warm_dir) = (PluginDir::with(&[path])?, PluginDir::with(&[path])?);
        let naive = start_host(&naive_dir, naive_config.clone()).await?;
        let warm = start_host(&warm_dir, RuntimeConfig::default()).await?;
        let (naive_plugin, warm_plugin) = (naive.plugins().plugins()[0].clone(), warm.plugins().plugins()[0].clone());
        anyhow::ensure!(warm_plugin.stateless, "{lang}: the example must declare itself stateless");
        const ROUNDS: usize = 5;
        let mut samples: [Vec<Duration>; 5] = Default::default();
        for _ in 0..ROUNDS {
            samples[0].extend(sample(n / ROUNDS, || instantiate(&naive_plugin)).await?);
            samples[1].extend(sample(n / ROUNDS, || call(&naive_plugin, &task)).await?);
            samples[2].extend(sample(n / ROUNDS, || call(&warm_plugin, &task)).await?);
            samples[3].extend(sample(n / ROUNDS, || dispatch(&naive, &topic, &text)).await?);
            samples[4].extend(sample(n / ROUNDS, || dispatch(&warm, &topic, &text)).await?);
        }
        let [fresh, task_naive, task_warm, dispatch_naive, dispatch_warm] = samples.map(Stats::of);
        row(&format!("{lang}: a fresh instance alone"), &fresh, None);
        row(&format!("{lang}: task, naive"), &task_naive, None);
        row(&format!("{lang}: task, optimised"), &task_warm, Some(task_naive.p50));
        row(&format!("{lang}: one-plugin dispatch, naive"), &dispatch_naive, None);
        row(&format!("{lang}: one-plugin dispatch, optimised"), &dispatch_warm, Some(dispatch_naive.p50));
        rows.push((lang, task_warm.p50));
    }
    println!();
    for (lang, p50) in rows.iter().filter(|(lang, _)| matches!(*lang, "python" | "js")) {
        let ok = *p50 <= Duration::from_micros(300);
        println!("target: {lang} per task (optimised) <= 300 µs: {} {}", bench::us(*p50), bench::verdict(ok));
    }
    Ok(())
}
