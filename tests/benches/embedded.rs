//! Embedded dispatch latency and throughput, next to their floor measured in
//! the same run: a fresh instance + `interested` + `handle` of the same
//! component(s), called directly (no bus, no ledger, no dispatcher).
//!
//! `cargo xtask bench` runs it; `-- --quick` for a short run.

use anocast::{DispatchOptions, RuntimeConfig, Topic};
use anocast_tests::bench::{
    self, Settings, Stats, direct, dispatch, dispatch_throughput, row, sample, verdict, wit_task,
};
use anocast_tests::{PluginDir, guests, start_host};

fn main() -> anyhow::Result<()> {
    bench::run(|| embedded(Settings::from_args()))
}

async fn embedded(settings: Settings) -> anyhow::Result<()> {
    let payload = b"hello, anocast".to_vec();
    let options = DispatchOptions { content_type: "text/plain".into(), ..DispatchOptions::default() };
    let dir1 = PluginDir::with(&[guests::ECHO])?;
    let one = start_host(&dir1, RuntimeConfig::default()).await?;
    let dir4 = PluginDir::with(&[guests::ECHO, guests::ECHO2, guests::ECHO3, guests::ECHO4])?;
    let four = start_host(&dir4, RuntimeConfig::default()).await?;
    let echo = one.plugins().loaded[0].plugin.clone();
    let all = four.plugins().plugins();

    println!("anocast embedded dispatch benchmark ({} logical CPUs)", std::thread::available_parallelism()?.get());
    println!("floor = fresh instance + interested + handle of the same component(s), called directly, same run\n");
    println!(
        "latency, one at a time ({} samples)         {:>10} {:>10} {:>12}",
        settings.latency_samples, "p50", "p99", "p50/floor"
    );

    // Floor and dispatch are measured in alternating rounds, so that drift
    // on a shared machine affects both alike.
    const ROUNDS: usize = 5;
    let task_one = wit_task("bench.one", &payload);
    let topic_one = Topic::parse("bench.one")?;
    let task_four = wit_task("bench.four", &payload);
    let topic_four = Topic::parse("bench.four")?;
    let (mut f1, mut d1, mut f4, mut d4) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let per_round = settings.latency_samples / ROUNDS;
    for _ in 0..ROUNDS {
        f1.extend(sample(per_round, || direct(&echo, &task_one)).await?);
        d1.extend(sample(per_round, || dispatch(one.dispatcher(), &topic_one, &payload, &options, 1)).await?);
        f4.extend(
            sample(per_round / 2, || async {
                for plugin in &all {
                    direct(plugin, &task_four).await?;
                }
                Ok(())
            })
            .await?,
        );
        d4.extend(sample(per_round / 2, || dispatch(four.dispatcher(), &topic_four, &payload, &options, 4)).await?);
    }
    let (floor1, d1, floor4, d4) = (Stats::of(f1), Stats::of(d1), Stats::of(f4), Stats::of(d4));
    row("floor, 1 plugin", &floor1, None);
    row("dispatch, 1 interested", &d1, Some(floor1.p50));
    row("floor, 4 plugins (in turn)", &floor4, None);
    row("dispatch, 4 interested", &d4, Some(floor4.p50));

    println!("\nthroughput ({} in flight, {:.1} s)", settings.in_flight, settings.throughput_for.as_secs_f64());
    let t_floor1 = {
        let (echo, task) = (echo.clone(), task_one.clone());
        bench::throughput(&settings, move || {
            let (echo, task) = (echo.clone(), task.clone());
            async move { direct(&echo, &task).await }
        })
        .await?
    };
    let t1 = dispatch_throughput(&settings, one.dispatcher(), &topic_one, &payload, &options, 1).await?;
    let t4 = dispatch_throughput(&settings, four.dispatcher(), &topic_four, &payload, &options, 4).await?;
    println!("  {:<38} {:>10.0} /s", "floor, direct calls, 1 plugin", t_floor1);
    println!("  {:<38} {:>10.0} /s   {:.2} of floor", "dispatch, 1 interested", t1, t1 / t_floor1);
    println!(
        "  {:<38} {:>10.0} /s   {:.2} of floor (worker calls: {:.0} /s)",
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
