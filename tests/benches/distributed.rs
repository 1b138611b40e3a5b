//! Distributed dispatch latency and throughput over loopback, with K = 1, 4
//! and 16 interested workers, next to the floor measured in the same run:
//! a bare NATS request-reply round trip + two Redis round trips + the
//! embedded per-task cost (fresh instance + `interested` + `handle`).
//!
//! The floor is given two ways. The sum of the parts' medians, each part
//! measured in a tight loop of its own, keeps every server hot; the same
//! four steps run one after another (what a dispatch does) pay for waking
//! each server and thread in turn, which on a virtual machine is most of
//! the cost. Both ratios are printed.
//!
//! Then the cost of signing (issue 4): sealing and opening one reply
//! envelope, signing and checking one declaration entry, verifying pending
//! replies one by one versus as a batch, and the share of all that in the
//! one-worker dispatch's median measured above. The floor the project
//! sets for a distributed dispatch adds that signing to floor B (the steps
//! in sequence); the last verdict uses it, the one before adds it to floor
//! A.
//!
//! The one-worker dispatch is measured twice: with `echo`, which runs each
//! task in a fresh instance, and with `echo-warm`, the same worker declared
//! stateless, which runs in warm instances (the node keeps up to as many
//! idle as there are dispatches in flight); each is compared with a floor
//! whose embedded cost is its own. Their throughputs and their floors' are
//! measured in alternating rounds; the medians are printed.
//!
//! One process holds a node with those seventeen echo plugins and a
//! plugin-less dispatcher; they talk through a `nats-server` and a `redis-server`
//! started for the run on free ports. `cargo xtask bench` runs it;
//! `-- --quick` for a short run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anocast::anocast_wire::envelope::Sealed;
use anocast::anocast_wire::task::payload_digest;
use anocast::anocast_wire::{Declaration, Envelope, NodeKey, TaskFacts, WireError, Worker, key::verify_batch};
use anocast::runtime::{Plugin, WitTask};
use anocast::{DispatchOptions, Host, HostConfig, MeshConfig, RuntimeConfig, Topic};
use anocast_tests::bench::{
    self, Settings, Stats, direct, dispatch, dispatch_throughput, measure, row, sample, verdict, wit_task,
};
use anocast_tests::servers::{Nats, Redis};
use anocast_tests::{ECHOES, PluginDir, guests};
use futures::StreamExt;

fn main() -> anyhow::Result<()> {
    bench::run(|| distributed(Settings::from_args()))
}

async fn distributed(settings: Settings) -> anyhow::Result<()> {
    let (nats, redis) = (Nats::start()?, Redis::start()?);
    let data = tempfile::tempdir()?;
    let mut mesh = MeshConfig::new(&nats.url(), &redis.url());
    mesh.trust_mesh = true;
    mesh.data_dir = Some(data.path().to_owned());
    // The node runs the client's tasks: it trusts the client's key.
    mesh.trust = vec![anocast_tests::client_key().trust.clone()];
    let dir = PluginDir::with(&[&ECHOES[..], &[guests::ECHO_WARM]].concat())?;
    let node = Host::start(HostConfig {
        plugins: Some(dir.path().to_owned()),
        node_id: "bench-node".into(),
        // A stateless plugin keeps as many idle instances as there are
        // dispatches in flight (`--warm-instances 64`), as a node tuned for
        // this load would; with the default 4, instances that come back to
        // a full pool are dropped and tasks that find none idle start
        // fresh. Plugins not declared stateless are unaffected.
        runtime: RuntimeConfig { warm_instances: settings.in_flight, ..RuntimeConfig::default() },
        mesh: Some(mesh.clone()),
        nesting: Default::default(),
        settle: Default::default(),
    })
    .await?;
    anyhow::ensure!(node.plugins().loaded.len() == 17, "failed: {:?}", node.plugins().failed);
    let client = Host::start(HostConfig {
        plugins: None,
        node_id: anocast_tests::CLIENT_ID.into(),
        runtime: RuntimeConfig::default(),
        mesh: Some(MeshConfig { key: Some(anocast_tests::client_key().key.clone()), ..mesh }),
        nesting: Default::default(),
        settle: Default::default(),
    })
    .await?;
    anyhow::ensure!(client.mesh_nodes().len() == 1, "the client does not see the node");

    let payload = b"hello, anocast".to_vec();
    let options = DispatchOptions { content_type: "text/plain".into(), ..DispatchOptions::default() };
    let n = settings.latency_samples / 4;

    println!(
        "anocast distributed dispatch benchmark ({} logical CPUs, loopback)",
        std::thread::available_parallelism()?.get()
    );
    println!("floor = NATS request-reply + 2 Redis round trips + embedded per-task cost, same run\n");
    println!("latency, one at a time ({n} samples)          {:>10} {:>10} {:>12}", "p50", "p99", "p50/floor");

    // The floor's parts.
    let nats_client = async_nats::connect(nats.url()).await?;
    let mut responder = nats_client.subscribe("bench.rr").await?;
    let replier = nats_client.clone();
    tokio::spawn(async move {
        while let Some(message) = responder.next().await {
            if let Some(reply) = message.reply {
                let _ = replier.publish(reply, message.payload).await;
            }
        }
    });
    nats_client.flush().await?;
    // The floor's parts and the one-worker dispatch are measured in
    // alternating rounds, so that drift on a shared machine affects both.
    let conn = anocast::ledger::connect_redis(&redis.url(), &Default::default(), Duration::from_secs(5)).await?;
    let plugin = |name: &str| {
        let found = node.plugins().loaded.iter().find(|p| p.plugin.info.name == name).map(|p| p.plugin.clone());
        found.ok_or_else(|| anyhow::anyhow!("no {name} plugin"))
    };
    let (echo, echo_warm) = (plugin("echo")?, plugin("echo-warm")?);
    anyhow::ensure!(echo_warm.stateless && !echo.stateless, "echo-warm alone must be stateless");
    let (task, task_warm) = (wit_task("bench.one", &payload), wit_task("bench.warm", &payload));
    let (topic_one, topic_warm) = (Topic::parse("bench.one")?, Topic::parse("bench.warm")?);
    let (mut rr, mut redis_rt, mut embedded, mut sequence, mut one) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut embedded_warm, mut sequence_warm, mut warm) = (Vec::new(), Vec::new(), Vec::new());
    const ROUNDS: usize = 5;
    for _ in 0..ROUNDS {
        rr.extend(
            sample(n / ROUNDS, || async {
                nats_client.request("bench.rr", payload.clone().into()).await?;
                Ok(())
            })
            .await?,
        );
        redis_rt.extend(sample(n / ROUNDS, || ping(&conn)).await?);
        embedded.extend(sample(n / ROUNDS, || direct(&echo, &task)).await?);
        sequence.extend(sample(n / ROUNDS, || floor_steps(&nats_client, &conn, payload.clone(), &echo, &task)).await?);
        one.extend(sample(n / ROUNDS, || dispatch(client.dispatcher(), &topic_one, &payload, &options, 1)).await?);
        embedded_warm.extend(sample(n / ROUNDS, || direct(&echo_warm, &task_warm)).await?);
        sequence_warm.extend(
            sample(n / ROUNDS, || floor_steps(&nats_client, &conn, payload.clone(), &echo_warm, &task_warm)).await?,
        );
        warm.extend(sample(n / ROUNDS, || dispatch(client.dispatcher(), &topic_warm, &payload, &options, 1)).await?);
    }
    let (rr, redis_rt, embedded) = (Stats::of(rr), Stats::of(redis_rt), Stats::of(embedded));
    let (sequence, one) = (Stats::of(sequence), Stats::of(one));
    let (embedded_warm, sequence_warm, warm) = (Stats::of(embedded_warm), Stats::of(sequence_warm), Stats::of(warm));
    row("NATS request-reply", &rr, None);
    row("Redis round trip", &redis_rt, None);
    row("embedded per-task cost", &embedded, None);
    let floor = rr.p50 + redis_rt.p50 * 2 + embedded.p50;
    println!("  {:<38} {:>10}", "floor A: sum of the p50s above", bench::us(floor));
    row("floor B: the four steps in sequence", &sequence, None);
    row("dispatch, 1 interested (vs floor A)", &one, Some(floor));
    println!("  {:<38} {:>10} {:>10} {:>12}", "                       (vs floor B)", "", "", ratio(&one, sequence.p50));
    row("embedded per-task cost, warm instance", &embedded_warm, None);
    // The same floors, with the warm instance's embedded cost.
    let floor_warm = rr.p50 + redis_rt.p50 * 2 + embedded_warm.p50;
    println!("  {:<38} {:>10}", "floor A, warm", bench::us(floor_warm));
    row("floor B, warm", &sequence_warm, None);
    let sequence_warm = sequence_warm.p50;
    row("dispatch, 1 interested, warm (vs A)", &warm, Some(floor_warm));
    println!(
        "  {:<38} {:>10} {:>10} {:>12}",
        "                       (vs floor B)",
        "",
        "",
        ratio(&warm, sequence_warm)
    );

    for (k, name) in [(4, "bench.four"), (16, "bench.sixteen")] {
        let topic = Topic::parse(name)?;
        let stats = measure(n, || dispatch(client.dispatcher(), &topic, &payload, &options, k)).await?;
        // Each extra worker adds at least its own task to the floor.
        let extra = embedded.p50 * (k as u32 - 1);
        row(&format!("dispatch, {k} interested (vs floor A)"), &stats, Some(floor + extra));
        println!(
            "  {:<38} {:>10} {:>10} {:>12}",
            "                       (vs floor B)",
            "",
            "",
            ratio(&stats, sequence.p50 + extra)
        );
    }

    let round = Settings { throughput_for: settings.throughput_for / ROUNDS as u32, ..settings.clone() };
    println!(
        "\nthroughput ({} in flight; the one-worker lines and their floors: medians of {ROUNDS} alternating rounds of {:.1} s; the others: {:.1} s)",
        settings.in_flight,
        round.throughput_for.as_secs_f64(),
        settings.throughput_for.as_secs_f64()
    );
    // The floor's throughput: the same unavoidable work per dispatch (a
    // NATS request-reply, two Redis round trips, the embedded task, one
    // seal and one open of a reply envelope), as many in flight.
    let key = Arc::new(NodeKey::generate()?);
    let partial = Arc::new(bench_partial(&bench_worker(&key), &payload));
    let floor_work = |plugin: &Arc<Plugin>, task: &WitTask| {
        let (nats, conn, plugin, task) = (nats_client.clone(), conn.clone(), plugin.clone(), task.clone());
        let (key, partial, body) = (key.clone(), partial.clone(), payload.clone());
        move || {
            let (nats, conn, plugin, task) = (nats.clone(), conn.clone(), plugin.clone(), task.clone());
            let (key, partial, body) = (key.clone(), partial.clone(), body.clone());
            async move {
                floor_steps(&nats, &conn, body, &plugin, &task).await?;
                Envelope::open(&partial.seal(&key)?)?;
                Ok(())
            }
        }
    };
    // Drift on a shared machine is slower than a round, so alternating
    // rounds expose the floors and the dispatches to the same conditions.
    let mut rounds: [Vec<f64>; 4] = Default::default();
    for _ in 0..ROUNDS {
        rounds[0].push(bench::throughput(&round, floor_work(&echo, &task)).await?);
        rounds[1].push(dispatch_throughput(&round, client.dispatcher(), &topic_one, &payload, &options, 1).await?);
        rounds[2].push(bench::throughput(&round, floor_work(&echo_warm, &task_warm)).await?);
        rounds[3].push(dispatch_throughput(&round, client.dispatcher(), &topic_warm, &payload, &options, 1).await?);
    }
    let [floor_throughput, t1, floor_throughput_warm, t1_warm] = rounds.map(median);
    let print = |label: &str, t: f64, k: usize, floor: f64| {
        println!(
            "  {:<38} {:>10.0} /s   {:.2} of floor   (worker replies: {:.0} /s)",
            label,
            t,
            t / floor,
            t * k as f64
        );
    };
    println!("  {:<38} {:>10.0} /s", "floor: its steps, as many in flight", floor_throughput);
    print("dispatch, 1 interested", t1, 1, floor_throughput);
    println!("  {:<38} {:>10.0} /s", "floor, warm", floor_throughput_warm);
    print("dispatch, 1 interested, warm", t1_warm, 1, floor_throughput_warm);
    for (k, name) in [(4, "bench.four"), (16, "bench.sixteen")] {
        let t =
            dispatch_throughput(&settings, client.dispatcher(), &Topic::parse(name)?, &payload, &options, k).await?;
        print(&format!("dispatch, {k} interested"), t, k, floor_throughput);
    }

    let signing = signing(&settings, one.p50)?;

    let ratio = |stats: &Stats, floor: Duration| stats.p50.as_secs_f64() / floor.as_secs_f64();
    let cell = |value: String, met: bool| format!("{value} {}", verdict(met));
    let ratios = |stats: &Stats, floor_a: Duration, floor_b: Duration| {
        [floor_a, floor_b, floor_a + signing, floor_b + signing].map(|f| {
            let r = ratio(stats, f);
            cell(format!("{r:.2}x"), r <= 1.5)
        })
    };
    let (fresh, warmed) = (ratios(&one, floor, sequence.p50), ratios(&warm, floor_warm, sequence_warm));
    println!("\ntargets, 1 interested                         {:>20} {:>20}", "fresh instances", "warm instances");
    for (i, label) in [
        "p50 <= 1.5x floor A",
        "p50 <= 1.5x floor B",
        "p50 <= 1.5x (floor A + signing)",
        "p50 <= 1.5x (floor B + signing)",
    ]
    .iter()
    .enumerate()
    {
        println!("  {label:<44} {:>20} {:>20}", fresh[i], warmed[i]);
    }
    println!(
        "  {:<44} {:>20} {:>20}   (the floors' steps alone: {floor_throughput:.0}/s, {floor_throughput_warm:.0}/s warm)",
        ">= 10,000 dispatches/s",
        cell(format!("{t1:.0}/s"), t1 >= 10_000.0),
        cell(format!("{t1_warm:.0}/s"), t1_warm >= 10_000.0)
    );
    node.shutdown().await;
    Ok(())
}

/// One Redis round trip.
async fn ping(conn: &redis::aio::ConnectionManager) -> anyhow::Result<()> {
    let _: String = redis::cmd("PING").query_async(&mut conn.clone()).await?;
    Ok(())
}

/// The floor's four steps, one after another: a NATS request-reply (to the
/// bench's responder), two Redis round trips and `plugin`'s task, called
/// directly.
async fn floor_steps(
    nats: &async_nats::Client,
    conn: &redis::aio::ConnectionManager,
    body: Vec<u8>,
    plugin: &Plugin,
    task: &WitTask,
) -> anyhow::Result<()> {
    nats.request("bench.rr", body.into()).await?;
    ping(conn).await?;
    ping(conn).await?;
    direct(plugin, task).await
}

const BENCH_TOPIC: &str = "bench.one";
const BENCH_REQUEST_ID: &str = "0196a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";

/// The echo worker of the bench node, signing with `key`.
fn bench_worker(key: &NodeKey) -> Worker {
    Worker {
        node: "bench-node".into(),
        plugin: "echo".into(),
        version: "0.1.0".into(),
        key: key.public(),
        digest: [7; 32],
    }
}

/// A partial of `worker` with `payload`, as it is sealed for a dispatch.
fn bench_partial(worker: &Worker, payload: &[u8]) -> Envelope {
    Envelope {
        timestamp_ms: 1_767_225_600_000,
        topic: BENCH_TOPIC.into(),
        request_id: BENCH_REQUEST_ID.into(),
        task_digest: [9; 32],
        worker: worker.clone(),
        ack: None,
        result: Some(Ok(payload.to_vec())),
        staged: false,
    }
}

/// The median of `values`.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// `1.23x`: `stats`'s median over `floor`.
fn ratio(stats: &Stats, floor: Duration) -> String {
    format!("{:.2}x", stats.p50.as_secs_f64() / floor.as_secs_f64())
}

/// Signing and verification costs, and their share of a one-worker
/// dispatch's median `one`; returns what one such dispatch spends on them.
fn signing(settings: &Settings, one: Duration) -> anyhow::Result<Duration> {
    let n = settings.latency_samples / 4;
    let key = NodeKey::generate()?;
    let worker = bench_worker(&key);
    let (topic, request_id) = (BENCH_TOPIC, BENCH_REQUEST_ID);
    let envelope = |payload: &[u8]| bench_partial(&worker, payload);
    let partial = envelope(b"hello, anocast");
    let sealed = partial.seal(&key)?;
    let task_digest = [9; 32];
    let entry = Declaration::entry(topic, request_id, &task_digest, &worker, &key)?;
    let task = TaskFacts {
        key: key.public(),
        dispatcher: "bench-client".into(),
        root: key.public(),
        topic: topic.into(),
        request_id: request_id.into(),
        reply_to: "_INBOX.bench.1".into(),
        payload_digest: payload_digest(b"hello, anocast"),
        content_type: "text/plain".into(),
        deadline_ms: 1_767_225_630_000,
        expected: vec!["echo".into()],
        ancestry: vec![],
    };
    let task_seal = task.seal(&key)?;

    println!("\nsigning, one reply at a time ({n} samples)     {:>10} {:>10} {:>12}", "p50", "p99", "");
    let seal = time(n, || partial.seal(&key).map(drop))?;
    row("seal a partial (encode + sign)", &seal, None);
    let open = time(n, || Envelope::open(&sealed).map(drop))?;
    row("open a partial (decode + verify)", &open, None);
    let declare = time(n, || Declaration::entry(topic, request_id, &task_digest, &worker, &key).map(drop))?;
    row("sign a declaration entry", &declare, None);
    let check = time(n, || Declaration::parse(&entry)?.verify(topic, request_id, &task_digest))?;
    row("parse + verify a declaration entry", &check, None);
    let sign_task = time(n, || task.seal(&key).map(drop))?;
    row("sign a task (protocol 2)", &sign_task, None);
    let verify_task = time(n, || task.verify(&task_seal.signature).map(drop))?;
    row("verify a task (protocol 2)", &verify_task, None);

    println!("\nverifying pending replies, per reply            {:>10} {:>10} {:>12}", "p50", "p99", "batch/single");
    for pending in [8usize, 64] {
        let messages: Vec<Vec<u8>> =
            (0..pending).map(|i| envelope(format!("partial {i}").as_bytes()).seal(&key)).collect::<Result<_, _>>()?;
        let rounds = (n / pending).max(50);
        let single = time(rounds, || {
            for m in &messages {
                Envelope::open(m)?;
            }
            Ok::<(), WireError>(())
        })?;
        let batch = time(rounds, || {
            let opened: Vec<Sealed<'_>> = messages.iter().map(|m| Sealed::decode(m)).collect::<Result<_, _>>()?;
            let items: Vec<_> = opened.iter().map(|s| (&s.envelope.worker.key, s.signed, &s.signature)).collect();
            verify_batch(&items)
        })?;
        let (single, batch) = (per(single, pending), per(batch, pending));
        row(&format!("{pending} pending, one by one"), &single, None);
        row(&format!("{pending} pending, as one batch"), &batch, Some(single.p50));
    }

    // What one one-worker dispatch signs and checks: the dispatcher signs
    // the task and the node verifies it (protocol 2); the node signs the
    // declaration entry and one envelope (echo answers on its first poll,
    // so its acknowledgement and partial travel together); the dispatcher
    // opens the envelope, whose acknowledgement vouches for the entry.
    let per_dispatch = sign_task.p50 + verify_task.p50 + declare.p50 + seal.p50 + open.p50;
    println!(
        "\n  signing in a 1-interested dispatch: 3 signatures + 2 verifications = {} of its p50 {} ({:.1}%)",
        bench::us(per_dispatch),
        bench::us(one),
        100.0 * per_dispatch.as_secs_f64() / one.as_secs_f64()
    );
    Ok(per_dispatch)
}

/// Latency percentiles of a synchronous `f`, after a warm-up.
fn time<T>(n: usize, mut f: impl FnMut() -> Result<(), T>) -> anyhow::Result<Stats>
where
    T: std::fmt::Display,
{
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let t = Instant::now();
        f().map_err(|e| anyhow::anyhow!("{e}"))?;
        if i >= n / 10 {
            samples.push(t.elapsed());
        }
    }
    Ok(Stats::of(samples))
}

/// `stats` divided by `count` (per item of a group).
fn per(stats: Stats, count: usize) -> Stats {
    Stats { p50: stats.p50 / count as u32, p99: stats.p99 / count as u32 }
}
