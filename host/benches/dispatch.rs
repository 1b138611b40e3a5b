//! Embedded dispatch latency and throughput, next to their floor measured in
//! the same run: a fresh instance + `interested` + `handle` of the same
//! component, called directly (no bus, no ledger, no dispatcher).
//!
//! Run with `cargo xtask bench`, which builds the guests and points
//! `ANOCAST_BENCH_GUESTS` at them. Options: `--quick` for a short run.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anocast::runtime::{Plugin, WitTask};
use anocast::{DispatchOptions, Dispatcher, Host, HostConfig, RuntimeConfig, Status, Topic};

struct Settings {
    latency_samples: usize,
    throughput_for: Duration,
    in_flight: usize,
}

fn guests_dir() -> PathBuf {
    std::env::var_os("ANOCAST_BENCH_GUESTS").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/guests/wasm32-wasip2/release/examples")
    })
}

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let settings = if quick {
        Settings { latency_samples: 2_000, throughput_for: Duration::from_millis(500), in_flight: 64 }
    } else {
        Settings { latency_samples: 20_000, throughput_for: Duration::from_secs(3), in_flight: 64 }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    // Run on a worker thread, as the gateway's handlers do.
    runtime.block_on(async { tokio::spawn(bench(settings)).await? })
}

/// A folder with copies of the named test guests.
fn folder(names: &[&str]) -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    for name in names {
        let from = guests_dir().join(format!("{name}.wasm"));
        std::fs::copy(&from, dir.path().join(format!("{name}.wasm"))).map_err(|e| {
            anyhow::anyhow!("{}: {e} (run `cargo xtask bench`, which builds the guests)", from.display())
        })?;
    }
    Ok(dir)
}

async fn start(names: &[&str]) -> anyhow::Result<(Host, tempfile::TempDir)> {
    let dir = folder(names)?;
    let host = Host::start(HostConfig {
        plugins: Some(dir.path().to_owned()),
        node_id: "bench".into(),
        runtime: RuntimeConfig::default(),
        mesh: None,
    })
    .await?;
    anyhow::ensure!(host.plugins().failed.is_empty(), "guests failed to load: {:?}", host.plugins().failed);
    Ok((host, dir))
}

fn wit_task(topic: &str, payload: &[u8]) -> WitTask {
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

/// The floor: what one worker costs when called directly.
async fn direct(plugin: &Plugin, task: &WitTask) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut instance = plugin.instantiate(Arc::from("bench"), Arc::from("bench"), deadline).await?;
    anyhow::ensure!(instance.interested(task).await?, "not interested");
    let reply = instance.handle(task).await?.map_err(anyhow::Error::msg)?;
    anyhow::ensure!(reply == task.payload, "wrong reply");
    Ok(())
}

struct Stats {
    p50: Duration,
    p99: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    Stats { p50: at(0.50), p99: at(0.99) }
}

async fn measure<F, Fut>(n: usize, mut f: F) -> anyhow::Result<Stats>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    for _ in 0..n / 10 {
        f().await?; // warm-up
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f().await?;
        samples.push(t.elapsed());
    }
    Ok(stats(samples))
}

/// Completions per second with `in_flight` loops running `f` concurrently.
async fn throughput<F, Fut>(settings: &Settings, f: F) -> anyhow::Result<f64>
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
    tokio::time::sleep(settings.throughput_for / 5).await; // warm-up
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

/// Dispatch throughput, checking that each outcome has `partials` partials.
async fn dispatch_throughput(
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
        async move {
            let outcome = d.dispatch(topic, payload, &options).await?;
            anyhow::ensure!(outcome.partials.len() == partials, "bad outcome");
            Ok(())
        }
    })
    .await
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn row(label: &str, s: &Stats, floor: Option<&Stats>) {
    let ratio = floor.map(|f| format!("{:.2}x", s.p50.as_secs_f64() / f.p50.as_secs_f64())).unwrap_or_default();
    println!("  {label:<34} {:>10} {:>10} {:>12}", us(s.p50), us(s.p99), ratio);
}

async fn bench(settings: Settings) -> anyhow::Result<()> {
    let payload = b"hello, anocast".to_vec();
    let options = DispatchOptions { content_type: "text/plain".into(), ..DispatchOptions::default() };

    let (one, _d1) = start(&["echo"]).await?;
    let (four, _d4) = start(&["echo", "echo2", "echo3", "echo4"]).await?;
    let echo = one.plugins().loaded[0].plugin.clone();
    let all: Vec<Arc<Plugin>> = four.plugins().plugins();

    println!("anocast embedded dispatch benchmark ({} logical CPUs)", std::thread::available_parallelism()?.get());
    println!("floor = fresh instance + interested + handle of the same component(s), called directly, same run\n");
    println!(
        "latency, one at a time ({} samples)     {:>10} {:>10} {:>12}",
        settings.latency_samples, "p50", "p99", "p50/floor"
    );

    let task_one = wit_task("bench.one", &payload);
    let floor1 = measure(settings.latency_samples, || direct(&echo, &task_one)).await?;
    row("floor, 1 plugin", &floor1, None);
    let topic_one = Topic::parse("bench.one")?;
    let d1 = measure(settings.latency_samples, || async {
        let outcome = one.dispatcher().dispatch(topic_one.clone(), payload.clone(), &options).await?;
        anyhow::ensure!(outcome.status == Status::Complete && outcome.partials.len() == 1, "bad outcome");
        Ok(())
    })
    .await?;
    row("dispatch, 1 interested", &d1, Some(&floor1));

    let task_four = wit_task("bench.four", &payload);
    let floor4 = measure(settings.latency_samples / 2, || async {
        for plugin in &all {
            direct(plugin, &task_four).await?;
        }
        Ok(())
    })
    .await?;
    row("floor, 4 plugins (in turn)", &floor4, None);
    let topic_four = Topic::parse("bench.four")?;
    let d4 = measure(settings.latency_samples / 2, || async {
        let outcome = four.dispatcher().dispatch(topic_four.clone(), payload.clone(), &options).await?;
        anyhow::ensure!(outcome.status == Status::Complete && outcome.partials.len() == 4, "bad outcome");
        Ok(())
    })
    .await?;
    row("dispatch, 4 interested", &d4, Some(&floor4));

    println!("\nthroughput ({} in flight, {:.1} s)", settings.in_flight, settings.throughput_for.as_secs_f64());
    let t_floor1 = {
        let (echo, task) = (echo.clone(), task_one.clone());
        throughput(&settings, move || {
            let (echo, task) = (echo.clone(), task.clone());
            async move { direct(&echo, &task).await }
        })
        .await?
    };
    let t1 = dispatch_throughput(&settings, one.dispatcher(), &topic_one, &payload, &options, 1).await?;
    let t4 = dispatch_throughput(&settings, four.dispatcher(), &topic_four, &payload, &options, 4).await?;
    println!("  {:<34} {:>10.0} /s", "floor, direct calls, 1 plugin", t_floor1);
    println!("  {:<34} {:>10.0} /s   {:.2} of floor", "dispatch, 1 interested", t1, t1 / t_floor1);
    println!(
        "  {:<34} {:>10.0} /s   {:.2} of floor (per worker call: {:.0} /s)",
        "dispatch, 4 interested",
        t4,
        4.0 * t4 / t_floor1,
        4.0 * t4
    );

    let ratio = d1.p50.as_secs_f64() / floor1.p50.as_secs_f64();
    println!("\ntargets: p50 <= 1.5x floor (1 interested): {:.2}x {}", ratio, verdict(ratio <= 1.5));
    println!("         >= 50,000 dispatches/s (1 interested): {:.0}/s {}", t1, verdict(t1 >= 50_000.0));
    Ok(())
}

fn verdict(ok: bool) -> &'static str {
    if ok { "(met)" } else { "(MISSED)" }
}
