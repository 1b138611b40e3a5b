//! Measuring helpers shared by the benchmarks (`tests/benches`): latency
//! percentiles of one-at-a-time calls, throughput with many in flight, and
//! the floor every dispatch is compared with: a fresh instance +
//! `interested` + `handle` of a plugin, called directly.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anocast::runtime::{Plugin, WitTask};
use anocast::{DispatchOptions, Dispatcher, Status, Topic};

/// How long and how hard to measure.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Samples per latency measurement.
    pub latency_samples: usize,
    /// Length of a throughput measurement.
    pub throughput_for: Duration,
    /// Operations in flight during a throughput measurement.
    pub in_flight: usize,
}

impl Settings {
    /// Full settings, or short ones when the arguments hold `--quick`.
    pub fn from_args() -> Self {
        if std::env::args().any(|a| a == "--quick") {
            Settings { latency_samples: 2_000, throughput_for: Duration::from_millis(500), in_flight: 64 }
        } else {
            Settings { latency_samples: 20_000, throughput_for: Duration::from_secs(3), in_flight: 64 }
        }
    }
}

/// Median and 99th percentile.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

impl Stats {
    /// The percentiles of `samples`.
    pub fn of(mut samples: Vec<Duration>) -> Stats {
        samples.sort();
        let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
        Stats { p50: at(0.50), p99: at(0.99) }
    }
}

/// `n` latencies of `f`, one call at a time, after a warm-up of a tenth as
/// many.
pub async fn sample<F, Fut>(n: usize, mut f: F) -> anyhow::Result<Vec<Duration>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    for _ in 0..n / 10 {
        f().await?;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f().await?;
        samples.push(t.elapsed());
    }
    Ok(samples)
}

/// Latency percentiles of `f`, one call at a time.
pub async fn measure<F, Fut>(n: usize, f: F) -> anyhow::Result<Stats>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    Ok(Stats::of(sample(n, f).await?))
}

/// Completions per second with `settings.in_flight` loops running `f`.
pub async fn throughput<F, Fut>(settings: &Settings, f: F) -> anyhow::Result<f64>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let f = Arc::new(f);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut loops = Vec::new();
    for _ in 0..settings.in_flight {
        let (f, stop, done) = (f.clone(), stop.clone(), done.clone());
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                f().await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(settings.throughput_for / 5).await;
    let (start_count, started) = (done.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(settings.throughput_for).await;
    let count = done.load(Ordering::Relaxed) - start_count;
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await??;
    }
    Ok(count as f64 / elapsed.as_secs_f64())
}

/// A task as the guest sees it.
pub fn wit_task(topic: &str, payload: &[u8]) -> WitTask {
    WitTask {
        topic: topic.into(),
        request_id: "bench".into(),
        payload: payload.to_vec(),
        content_type: "text/plain".into(),
        deadline_ms: 30_000,
        depth: 0,
        ancestry: Vec::new(),
    }
}

/// The floor: one echo worker's task, called directly.
pub async fn direct(plugin: &Plugin, task: &WitTask) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut instance = plugin.instantiate(Arc::from("bench"), Arc::from("bench"), deadline, None).await?;
    anyhow::ensure!(instance.interested(task).await?, "not interested");
    let reply = instance.handle(task).await?.map_err(anyhow::Error::msg)?;
    anyhow::ensure!(reply == task.payload, "wrong reply");
    Ok(())
}

/// One dispatch that must complete with `partials` partials.
pub async fn dispatch(
    dispatcher: &Dispatcher,
    topic: &Topic,
    payload: &[u8],
    options: &DispatchOptions,
    partials: usize,
) -> anyhow::Result<()> {
    let outcome = dispatcher.dispatch(topic.clone(), payload.to_vec(), options).await?;
    anyhow::ensure!(
        outcome.status == Status::Complete && outcome.partials.len() == partials,
        "unexpected outcome: {}",
        outcome.to_json()
    );
    Ok(())
}

/// Dispatch throughput, checking that each outcome has `partials` partials.
pub async fn dispatch_throughput(
    settings: &Settings,
    dispatcher: &Dispatcher,
    topic: &Topic,
    payload: &[u8],
    options: &DispatchOptions,
    partials: usize,
) -> anyhow::Result<f64> {
    let (d, topic, payload, options) = (dispatcher.clone(), topic.clone(), payload.to_vec(), options.clone());
    throughput(settings, move || {
        let (d, topic, payload, options) = (d.clone(), topic.clone(), payload.clone(), options.clone());
        async move { dispatch(&d, &topic, &payload, &options, partials).await }
    })
    .await
}

/// `12.3 µs`.
pub fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// One latency row, with its ratio to `floor` when given.
pub fn row(label: &str, s: &Stats, floor: Option<Duration>) {
    let ratio = floor.map(|f| format!("{:.2}x", s.p50.as_secs_f64() / f.as_secs_f64())).unwrap_or_default();
    println!("  {label:<38} {:>10} {:>10} {:>12}", us(s.p50), us(s.p99), ratio);
}

/// `(met)` or `(MISSED)`.
pub fn verdict(ok: bool) -> &'static str {
    if ok { "(met)" } else { "(MISSED)" }
}

/// A two-worker multi-thread runtime running `f` on one of its workers (as
/// the gateway's handlers run).
pub fn run<F, Fut>(f: F) -> anyhow::Result<()>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async { tokio::spawn(f()).await? })
}
