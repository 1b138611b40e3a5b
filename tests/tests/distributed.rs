//! Distributed mode: `anocast serve` processes joined over real NATS and
//! Redis servers that each test starts on free ports.

use std::time::{Duration, Instant};

use anocast::{DispatchOptions, Status, Topic};
use anocast_tests::servers::{Nats, Redis};
use anocast_tests::{Child, PluginDir, guests, mesh_client, options, spawn_serve, wait_until};
use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::Value;

const EXE: &str = env!("CARGO_BIN_EXE_anocast-cli-under-test");

/// The servers of one test.
struct Mesh {
    nats: Nats,
    redis: Redis,
}

/// One `anocast serve` process.
struct Node {
    process: Child,
    url: String,
    dir: PluginDir,
    _data: tempfile::TempDir,
}

impl Mesh {
    fn start() -> anyhow::Result<Self> {
        Ok(Mesh { nats: Nats::start()?, redis: Redis::start()? })
    }

    /// Starts a node with `guests` and a one-second liveness, trusting the
    /// mesh's nodes, with its key in a data folder of its own.
    fn node(&self, id: &str, guests: &[&str]) -> anyhow::Result<Node> {
        self.node_with(id, guests, &[])
    }

    /// [`Mesh::node`], with more flags.
    fn node_with(&self, id: &str, guests: &[&str], extra: &[&str]) -> anyhow::Result<Node> {
        let dir = PluginDir::with(guests)?;
        let data = tempfile::tempdir()?;
        let (nats, redis) = (self.nats.url(), self.redis.url());
        let data_dir = data.path().to_str().context("utf-8 path")?;
        let mut args =
            vec!["--nats", &nats, "--redis", &redis, "--liveness", "1s", "--trust-mesh", "--data-dir", data_dir];
        args.extend_from_slice(extra);
        let (process, url) = spawn_serve(EXE, dir.path(), id, &args)?;
        Ok(Node { process, url, dir, _data: data })
    }
}

/// Waits until every node sees `count` live nodes in the mesh (a node that
/// just joined is seen by the others within one registry refresh).
async fn converge(nodes: &[&Node], count: usize) -> anyhow::Result<()> {
    let until = Instant::now() + Duration::from_secs(10);
    for node in nodes {
        let mut plugins = Value::Null;
        let sees_all = async || {
            plugins = reqwest::get(format!("{}/v1/plugins", node.url)).await?.json().await?;
            Ok(plugins["mesh"].as_array().map(Vec::len) == Some(count))
        };
        let left = until.saturating_duration_since(Instant::now());
        wait_until(&format!("{} sees {count} live nodes", node.url), left, sees_all)
            .await
            .with_context(|| format!("the mesh did not converge: {plugins}"))?;
    }
    Ok(())
}

fn topic(t: &str) -> Topic {
    Topic::parse(t).expect("valid topic")
}

async fn http_dispatch(url: &str, topic: &str, payload: &str) -> anyhow::Result<Value> {
    http_dispatch_with(url, topic, payload, "").await
}

/// [`http_dispatch`], with more query parameters (`&name=value...`).
async fn http_dispatch_with(url: &str, topic: &str, payload: &str, query: &str) -> anyhow::Result<Value> {
    let response = reqwest::Client::new()
        .post(format!("{url}/v1/dispatch/{topic}?timeout_ms=10000&grace_ms=3000{query}"))
        .body(payload.to_owned())
        .send()
        .await?;
    anyhow::ensure!(response.status().is_success(), "HTTP {}", response.status());
    Ok(response.json().await?)
}

fn workers(outcome: &Value) -> Vec<String> {
    outcome["partials"]
        .as_array()
        .map_or_else(Vec::new, |p| p.iter().filter_map(|p| p["worker"].as_str().map(String::from)).collect())
}

/// A node's settle counters (committed, aborted, duplicates, ...).
async fn settle_stats(url: &str) -> anyhow::Result<Value> {
    let plugins: Value = reqwest::get(format!("{url}/v1/plugins")).await?.json().await?;
    Ok(plugins["settle"].clone())
}

/// Waits until the node's settle counter `name` reaches `at_least`.
async fn settle_count(url: &str, name: &str, at_least: u64) -> anyhow::Result<()> {
    let mut stats = Value::Null;
    let reached = async || {
        stats = settle_stats(url).await?;
        Ok(stats[name].as_u64().is_some_and(|n| n >= at_least))
    };
    wait_until(&format!("{name} reaches {at_least}"), Duration::from_secs(10), reached)
        .await
        .with_context(|| format!("{name} never reached {at_least}: {stats}"))
}

/// A committed value as Redis holds it.
async fn redis_value(redis: &Redis, plugin: &str, key: &str) -> anyhow::Result<Option<String>> {
    let mut conn = redis::Client::open(redis.url())?.get_multiplexed_async_connection().await?;
    let key = anocast::settle::redis_key(plugin, key);
    Ok(redis::cmd("GET").arg(key).query_async(&mut conn).await?)
}

async fn stats(url: &str, plugin: &str) -> anyhow::Result<Value> {
    let plugins: Value = reqwest::get(format!("{url}/v1/plugins")).await?.json().await?;
    plugins["plugins"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == plugin))
        .map(|p| p["stats"].clone())
        .with_context(|| format!("no plugin {plugin} at {url}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_sub_tasks_crosses_three_nodes() -> anyhow::Result<()> {
    let mesh = Mesh::start()?;
    let a = mesh.node("a", &[guests::RELAY_A])?;
    let b = mesh.node("b", &[guests::RELAY_B])?;
    // c refuses sub-tasks deeper than 2 (each node applies its own limit).
    let c = mesh.node_with("c", &[guests::RELAY_C], &["--max-depth", "2"])?;
    converge(&[&a, &b, &c], 3).await?;

    // a -> b -> c, dispatched through the node that holds the last relay.
    let outcome = http_dispatch(&c.url, "chain.a", "chain.b,chain.c").await?;
    assert_eq!(outcome["status"], "complete", "{outcome}");
    assert_eq!(workers(&outcome), ["a/relay-a@1.0.0"]);
    assert_eq!(
        outcome["partials"][0]["payload"],
        "relay-a[complete: relay-b[complete: relay-c(depth 2, ancestors 2)]]"
    );

    // c, at depth 2, may not go back to chain.a: a cycle, refused on c.
    let outcome = http_dispatch(&a.url, "chain.a", "chain.b,chain.c,chain.a").await?;
    let reply = outcome["partials"][0]["payload"].as_str().unwrap_or_default();
    assert!(
        reply.starts_with("relay-a[complete: relay-b[complete: relay-c refused: ")
            && reply.contains(r#"Cycle(["chain.a", "chain.b", "chain.c", "chain.a"])"#),
        "{outcome}"
    );

    // c's limit: its worker, at depth 2, may not dispatch at depth 3.
    let outcome = http_dispatch(&b.url, "chain.a", "chain.b,chain.c,other.topic").await?;
    assert_eq!(
        outcome["partials"][0]["payload"], "relay-a[complete: relay-b[complete: relay-c refused: Error::TooDeep(2)]]",
        "{outcome}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_writes_are_committed_into_redis_once_or_aborted() -> anyhow::Result<()> {
    let mesh = Mesh::start()?;
    let a = mesh.node("a", &[guests::STAGER])?;
    let b = mesh.node("b", &[guests::STAGER_B])?;
    converge(&[&a, &b], 2).await?;

    // Every worker ok: both nodes commit what their worker staged.
    let outcome = http_dispatch(&b.url, "stage.write", "color=blue;stager-b:owner=ann").await?;
    assert_eq!((outcome["status"].as_str(), outcome["settle"].as_str()), (Some("complete"), Some("commit")));
    settle_count(&a.url, "committed", 1).await?;
    settle_count(&b.url, "committed", 1).await?;
    assert_eq!(redis_value(&mesh.redis, "stager", "color").await?.as_deref(), Some("blue"));
    assert_eq!(redis_value(&mesh.redis, "stager-b", "owner").await?.as_deref(), Some("ann"));
    // The plugin reads the committed value (through any node).
    let outcome = http_dispatch(&b.url, "stage.read", "color").await?;
    assert_eq!(outcome["partials"][0]["worker"], "a/stager@1.0.0");
    assert_eq!(outcome["partials"][0]["payload"], "blue");

    // One worker fails: both drop their writes.
    let outcome = http_dispatch(&a.url, "stage.write", "color=red;stager-b:fail").await?;
    assert_eq!(outcome["settle"], "abort", "{outcome}");
    settle_count(&a.url, "aborted", 1).await?;
    assert_eq!(redis_value(&mesh.redis, "stager", "color").await?.as_deref(), Some("blue"));

    // Settled by hand through the CLI: only the decision of the node that
    // dispatched (signed with its key) applies, and only once.
    let outcome = http_dispatch_with(&a.url, "stage.write", "color=green", "&settle=manual").await?;
    assert_eq!(outcome["settle"], Value::Null);
    let id = outcome["request_id"].as_str().context("request id")?;
    let out = std::process::Command::new(EXE).args(["settle", id, "commit", "--url", &b.url]).output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    settle_count(&a.url, "foreign_decisions", 1).await?;
    assert_eq!(redis_value(&mesh.redis, "stager", "color").await?.as_deref(), Some("blue"), "b may not settle a's");
    for _ in 0..2 {
        let out = std::process::Command::new(EXE).args(["settle", id, "commit", "--url", &a.url]).output()?;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    settle_count(&a.url, "duplicates", 1).await?;
    assert_eq!(settle_stats(&a.url).await?["committed"], 2);
    assert_eq!(redis_value(&mesh.redis, "stager", "color").await?.as_deref(), Some("green"));
    // Committed values expire after the retention, like every key anocast writes.
    mesh.redis.assert_every_key_expires().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_of_a_worker_that_missed_the_deadline_are_dropped() -> anyhow::Result<()> {
    let mesh = Mesh::start()?;
    let a = mesh.node("a", &[guests::STAGER])?;
    converge(&[&a], 1).await?;
    // It stages, then works past the 300 ms deadline: the outcome (timed
    // out) is decided, commit by this dispatch's policy, before its writes
    // reach its node.
    let started = Instant::now();
    let outcome = reqwest::Client::new()
        .post(format!("{}/v1/dispatch/stage.write?timeout_ms=300&settle=commit", a.url))
        .body("late=1;sleep=350")
        .send()
        .await?
        .json::<Value>()
        .await?;
    assert_eq!((outcome["status"].as_str(), outcome["settle"].as_str()), (Some("timed_out"), Some("commit")));
    // Kept after the decision, they expire at the next sweep (not 30 s
    // later), never applied, and the plugin's hook hears so.
    settle_count(&a.url, "expired", 1).await?;
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    settle_count(&a.url, "hooks", 1).await?;
    let stats = settle_stats(&a.url).await?;
    assert_eq!((stats["committed"].as_u64(), stats["late_commits"].as_u64()), (Some(0), Some(0)), "{stats}");
    assert_eq!(redis_value(&mesh.redis, "stager", "late").await?, None);
    mesh.redis.assert_every_key_expires().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_between_staging_and_commit_applies_nothing() -> anyhow::Result<()> {
    let mesh = Mesh::start()?;
    let mut a = mesh.node("a", &[guests::STAGER])?;
    let b = mesh.node("b", &[guests::STAGER_B])?;
    converge(&[&a, &b], 2).await?;
    let client = mesh_client(&mesh.nats.url(), &mesh.redis.url()).await?;
    let dispatcher = client.dispatcher().clone();
    // stager (on a) stages and replies at once; stager-b takes 1.5 s.
    let pending = tokio::spawn(async move {
        let commands = b"k=from-a;stager-b:k=from-b;stager-b:sleep=1500".to_vec();
        dispatcher.dispatch(topic("stage.write"), commands, &options(3000, 30_000)).await
    });
    wait_until("stager staged", Duration::from_secs(10), async || Ok(settle_stats(&a.url).await?["staged"] == 1))
        .await?;
    a.process.0.kill()?;
    let outcome = pending.await??;
    // Both replied ok, so the outcome commits; only b is there to apply.
    assert_eq!(outcome.status, Status::Complete, "{}", outcome.to_json());
    assert_eq!(outcome.settle, Some(anocast::Decision::Commit));
    settle_count(&b.url, "committed", 1).await?;
    assert_eq!(redis_value(&mesh.redis, "stager-b", "k").await?.as_deref(), Some("from-b"));
    assert_eq!(redis_value(&mesh.redis, "stager", "k").await?, None, "the dead node's writes died with it");
    mesh.redis.assert_every_key_expires().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_with_different_plugins_answer_one_dispatch() -> anyhow::Result<()> {
    let mesh = Mesh::start()?;
    let a = mesh.node("a", &[guests::WORD_COUNT])?;
    let b = mesh.node("b", &[guests::SENTIMENT])?;
    let c = mesh.node("c", &[guests::FRAUD_CHECK, guests::INVENTORY])?;
    converge(&[&a, &b, &c], 3).await?;

    // Through the HTTP API of a node that has none of the plugins involved.
    let outcome = http_dispatch(&c.url, "text.analyze", "a great day").await?;
    assert_eq!(outcome["status"], "complete", "{outcome}");
    assert_eq!(workers(&outcome), ["a/word-count@0.1.0", "b/sentiment@0.1.0"]);
    assert_eq!(outcome["partials"][0]["payload"]["words"], 3);

    let outcome = http_dispatch(&a.url, "orders.created", r#"{"amount": 9000, "items": [{"sku": "x"}]}"#).await?;
    assert_eq!(workers(&outcome), ["c/fraud-check@0.1.0", "c/inventory@0.1.0"], "{outcome}");

    // The window closes as soon as every live receiver has answered, well
    // before the 3 s grace period: nobody subscribes...
    let started = Instant::now();
    let outcome = http_dispatch(&b.url, "weather.today", "").await?;
    assert_eq!(outcome["status"], "no_interest");
    assert!(started.elapsed() < Duration::from_millis(2000), "took {:?}", started.elapsed());
    // ...or one receiver declines and the other replies.
    let started = Instant::now();
    let outcome = http_dispatch(&b.url, "orders.created", r#"{"amount": 5, "items": [{"sku": "y"}]}"#).await?;
    assert_eq!(workers(&outcome), ["c/inventory@0.1.0"], "{outcome}");
    assert!(started.elapsed() < Duration::from_millis(2000), "took {:?}", started.elapsed());

    // A plugin-less client dispatches straight into the mesh.
    let out = std::process::Command::new(EXE)
        .args(["dispatch", "text.analyze", "bad news", "--nats", &mesh.nats.url(), "--redis", &mesh.redis.url()])
        .arg("--trust-mesh")
        .arg("--key")
        .arg(&anocast_tests::client_key().key)
        .output()?;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let outcome: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(workers(&outcome), ["a/word-count@0.1.0", "b/sentiment@0.1.0"]);

    mesh.redis.assert_every_key_expires().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_of_one_plugin_share_the_work() -> anyhow::Result<()> {
    let mesh = Mesh::start()?;
    let r1 = mesh.node("r1", &[guests::ECHO])?;
    let r2 = mesh.node("r2", &[guests::ECHO])?;
    let client = mesh_client(&mesh.nats.url(), &mesh.redis.url()).await?;
    let mut by_node = std::collections::BTreeMap::new();
    for i in 0..200 {
        let outcome =
            client.dispatcher().dispatch(topic("echo"), format!("{i}").into_bytes(), &options(3000, 10_000)).await?;
        assert_eq!(outcome.status, Status::Complete);
        let [partial] = &outcome.partials[..] else { bail!("each task is handled once: {}", outcome.to_json()) };
        assert_eq!(partial.result.as_deref().ok(), Some(format!("{i}").as_bytes()));
        *by_node.entry(partial.worker.node.clone()).or_insert(0) += 1;
    }
    assert_eq!(by_node.len(), 2, "both replicas should take part: {by_node:?}");
    let received = stats(&r1.url, "echo").await?["received"].as_u64().unwrap_or(0)
        + stats(&r2.url, "echo").await?["received"].as_u64().unwrap_or(0);
    assert_eq!(received, 200, "each task reached exactly one replica");
    mesh.redis.assert_every_key_expires().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_declaration_never_meets_a_premature_outcome() -> anyhow::Result<()> {
    // echo answers at once; misbehave decides after 0-400 ms (from the
    // payload), against a 200 ms interest window: about half of its
    // declarations come too late and must be refused, and every accepted
    // one must be in its dispatch's outcome.
    const DISPATCHES: usize = 10_000;
    // Dispatches in flight at once. The first burst must fit this 2-core
    // machine's CPU within echo's 200 ms window (each dispatch signs and
    // verifies): more at once legitimately leaves echo outside it.
    const IN_FLIGHT: usize = 100;
    let mesh = Mesh::start()?;
    let _fast = mesh.node("fast", &[guests::ECHO])?;
    let slow = mesh.node("slow", &[guests::MISBEHAVE])?;
    let client = mesh_client(&mesh.nats.url(), &mesh.redis.url()).await?;
    let dispatcher = client.dispatcher().clone();
    let race = topic("race.go");
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut delays = Vec::with_capacity(DISPATCHES);
    for _ in 0..DISPATCHES {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        delays.push(seed % 401);
    }
    let results = futures::stream::iter(delays)
        .map(|delay| {
            let (dispatcher, race) = (dispatcher.clone(), race.clone());
            async move {
                let options = DispatchOptions { grace: Duration::from_millis(200), ..options(200, 20_000) };
                dispatcher.dispatch(race, delay.to_string().into_bytes(), &options).await
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<_>>()
        .await;
    let mut slow_partials = 0u64;
    for result in results {
        let outcome = result?;
        assert_eq!(outcome.status, Status::Complete, "{}", outcome.to_json());
        assert!(outcome.partials.iter().any(|p| p.worker.plugin == "echo"), "{}", outcome.to_json());
        slow_partials += outcome.partials.iter().filter(|p| p.worker.plugin == "misbehave").count() as u64;
    }
    // Late deciders may still be making up their minds: wait until every
    // task has been declared or refused.
    let settled = async || {
        let stats = stats(&slow.url, "misbehave").await?;
        Ok(stats["declared"].as_u64().unwrap_or(0) + stats["refused"].as_u64().unwrap_or(0) == DISPATCHES as u64)
    };
    let waited = wait_until("every task was declared or refused", Duration::from_secs(10), settled).await;
    let stats = stats(&slow.url, "misbehave").await?;
    waited.with_context(|| format!("{stats}"))?;
    let declared = stats["declared"].as_u64().unwrap_or(u64::MAX);
    let refused = stats["refused"].as_u64().unwrap_or(u64::MAX);
    assert_eq!(declared + refused, DISPATCHES as u64, "{stats}");
    assert_eq!(declared, slow_partials, "an accepted declaration is missing from its outcome: {stats}");
    assert!(declared > 1000 && refused > 1000, "the delays should straddle the window: {stats}");
    mesh.redis.assert_every_key_expires().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_task_is_reported_missing_long_before_the_deadline() -> anyhow::Result<()> {
    let mesh = Mesh::start()?;
    let _a = mesh.node("a", &[guests::ECHO])?;
    let mut b = mesh.node("b", &[guests::MISBEHAVE])?;
    let client = mesh_client(&mesh.nats.url(), &mesh.redis.url()).await?;
    let dispatcher = client.dispatcher().clone();
    let started = Instant::now();
    let pending = tokio::spawn(async move {
        dispatcher.dispatch(topic("misbehave.sleep"), b"60000".to_vec(), &options(3000, 30_000)).await
    });
    // Wait until the worker has declared, then kill its node without warning.
    let declared = async || Ok(stats(&b.url, "misbehave").await?["declared"] == 1);
    wait_until("the worker declared", Duration::from_secs(10), declared).await?;
    b.process.0.kill()?;
    let outcome = pending.await??;
    let elapsed = started.elapsed();
    assert_eq!(outcome.status, Status::Incomplete, "{}", outcome.to_json());
    assert_eq!(outcome.missing, ["b/misbehave@0.1.0"]);
    assert!(elapsed < Duration::from_secs(8), "the dead node was noticed after {elapsed:?}");
    mesh.redis.assert_every_key_expires().await
}

/// Dispatches `echo` until one completes, for at most `within`.
async fn until_echo_answers(client: &anocast::Host, within: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let answers = async || {
        let outcome = client.dispatcher().dispatch(topic("echo"), b"back?".to_vec(), &options(500, 2000)).await;
        Ok(outcome.is_ok_and(|outcome| outcome.status == Status::Complete))
    };
    wait_until("a dispatch succeeded after the restart", within, answers).await?;
    Ok(started.elapsed())
}

/// Starts a 1.5 s task with a `timeout_ms` deadline, runs `outage` once
/// the worker on the node at `url` has declared (its task is under way),
/// and returns the dispatch's outcome and how long it took.
async fn in_flight_through(
    client: &anocast::Host,
    url: &str,
    timeout_ms: u64,
    outage: impl FnOnce(),
) -> anyhow::Result<(anocast::Outcome, Duration)> {
    let declared_before = stats(url, "misbehave").await?["declared"].as_u64().unwrap_or(0);
    let dispatcher = client.dispatcher().clone();
    let in_flight = tokio::spawn(async move {
        let started = Instant::now();
        let result = dispatcher.dispatch(topic("misbehave.sleep"), b"1500".to_vec(), &options(1000, timeout_ms)).await;
        (result, started.elapsed())
    });
    let declared = async || Ok(stats(url, "misbehave").await?["declared"].as_u64().unwrap_or(0) > declared_before);
    wait_until("the in-flight task's worker declared", Duration::from_secs(10), declared).await?;
    outage();
    let (result, elapsed) = in_flight.await?;
    Ok((result.context("the in-flight dispatch should end with an outcome")?, elapsed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_ride_out_a_redis_restart() -> anyhow::Result<()> {
    let mut mesh = Mesh::start()?;
    let _a = mesh.node("a", &[guests::ECHO])?;
    let b = mesh.node("b", &[guests::MISBEHAVE])?;
    let client = mesh_client(&mesh.nats.url(), &mesh.redis.url()).await?;
    until_echo_answers(&client, Duration::from_secs(5)).await?;

    // A dispatch in flight when Redis goes away ends with a status by its
    // deadline.
    let (outcome, elapsed) = in_flight_through(&client, &b.url, 4000, || mesh.redis.stop()).await?;
    assert!(matches!(outcome.status, Status::Complete | Status::TimedOut), "{}", outcome.to_json());
    assert!(elapsed < Duration::from_millis(5000), "took {elapsed:?}");

    // While Redis is down, dispatches still end by their deadline.
    let started = Instant::now();
    let result = client.dispatcher().dispatch(topic("echo"), b"x".to_vec(), &options(300, 1500)).await;
    assert!(started.elapsed() < Duration::from_millis(2500), "took {:?}: {result:?}", started.elapsed());

    mesh.redis.restart()?;
    let recovered = until_echo_answers(&client, Duration::from_secs(15)).await?;
    eprintln!("dispatches succeed again {recovered:?} after Redis restarted");
    let outcome = client.dispatcher().dispatch(topic("misbehave.ok"), Vec::new(), &options(1000, 5000)).await?;
    assert_eq!(outcome.status, Status::Complete);
    mesh.redis.assert_every_key_expires().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_ride_out_a_nats_restart() -> anyhow::Result<()> {
    let mut mesh = Mesh::start()?;
    let _a = mesh.node("a", &[guests::ECHO])?;
    let b = mesh.node("b", &[guests::MISBEHAVE])?;
    let client = mesh_client(&mesh.nats.url(), &mesh.redis.url()).await?;
    until_echo_answers(&client, Duration::from_secs(5)).await?;

    let (outcome, elapsed) = in_flight_through(&client, &b.url, 3000, || mesh.nats.stop()).await?;
    // The partial was lost with the server: the deadline ends the dispatch.
    assert_eq!(outcome.status, Status::TimedOut, "{}", outcome.to_json());
    assert_eq!(outcome.missing, ["b/misbehave@0.1.0"]);
    assert!(elapsed < Duration::from_millis(4000), "took {elapsed:?}");

    mesh.nats.restart()?;
    let recovered = until_echo_answers(&client, Duration::from_secs(20)).await?;
    eprintln!("dispatches succeed again {recovered:?} after NATS restarted");
    // Each node reconnects on its own: node a answering says nothing of
    // node b, which may still be waiting for its next reconnect attempt.
    let b_answers = async || {
        let outcome = client.dispatcher().dispatch(topic("misbehave.ok"), Vec::new(), &options(500, 2000)).await;
        Ok(outcome.is_ok_and(|outcome| outcome.status == Status::Complete))
    };
    wait_until("node b answered after the restart", Duration::from_secs(20).saturating_sub(recovered), b_answers)
        .await?;
    let outcome = client.dispatcher().dispatch(topic("misbehave.ok"), Vec::new(), &options(1000, 5000)).await?;
    assert_eq!(outcome.status, Status::Complete, "{}", outcome.to_json());
    mesh.redis.assert_every_key_expires().await
}

#[test]
fn unreachable_servers_fail_at_start_with_one_line() -> anyhow::Result<()> {
    let dir = PluginDir::with(&[guests::ECHO])?;
    let data = tempfile::tempdir()?;
    let dead = format!("127.0.0.1:{}", anocast_tests::servers::free_port()?);
    let redis = Redis::start()?;
    let nats = Nats::start()?;
    for (nats_url, redis_url, needle) in [
        (format!("nats://{dead}"), redis.url(), "cannot connect to NATS"),
        (nats.url(), format!("redis://{dead}"), "cannot connect to Redis"),
    ] {
        let out = std::process::Command::new(EXE)
            .args(["serve", "--http", "127.0.0.1:0", "--nats", &nats_url, "--redis", &redis_url, "--trust-mesh"])
            .arg("--data-dir")
            .arg(data.path())
            .arg("--plugins")
            .arg(dir.path())
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(errors[0].contains(needle), "{stderr}");
    }
    let out = std::process::Command::new(EXE)
        .args(["serve", "--http", "127.0.0.1:0", "--nats", &nats.url(), "--plugins"])
        .arg(dir.path())
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs --redis"));
    // Nobody to trust: refused before connecting to anything.
    let out = std::process::Command::new(EXE)
        .args(["serve", "--http", "127.0.0.1:0", "--nats", &nats.url(), "--redis", &redis.url(), "--plugins"])
        .arg(dir.path())
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.lines().count() == 1 && stderr.contains("needs --trust PATH"), "{stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_and_the_environment_configure_a_node() -> anyhow::Result<()> {
    let mesh = Mesh::start()?;
    let dir = PluginDir::with(&[guests::ECHO])?;
    let config = dir.write(
        "node.toml",
        format!(
            "plugins = {:?}\nnats = {:?}\nredis = {:?}\nnode_id = \"from-file\"\nliveness = \"2s\"\nmemory_limit_mib = 32\n\
             trust_mesh = true\ndata_dir = {:?}\n",
            dir.path().display().to_string(),
            mesh.nats.url(),
            mesh.redis.url(),
            dir.path().join("data").display().to_string()
        )
        .as_bytes(),
    )?;
    let config = config.to_str().context("utf-8 path")?;
    // The environment overrides the file.
    let (_node, url) = anocast_tests::spawn_anocast(
        EXE,
        &["serve", "--config", config, "--http", "127.0.0.1:0"],
        &[("ANOCAST_NODE_ID", "from-env")],
    )?;
    let plugins: Value = reqwest::get(format!("{url}/v1/plugins")).await?.json().await?;
    assert_eq!(plugins["node"], "from-env");
    assert_eq!(plugins["mode"], "distributed");
    let outcome = http_dispatch(&url, "echo", "configured").await?;
    assert_eq!(workers(&outcome), ["from-env/echo@1.0.0"]);

    let bad = dir.write("bad.toml", b"plugins = \"x\"\nnatss = \"typo\"\n")?;
    let out = std::process::Command::new(EXE).args(["serve", "--config"]).arg(&bad).output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.lines().count() == 1 && stderr.contains("unknown field `natss`"), "{stderr}");
    mesh.redis.assert_every_key_expires().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_on_the_wire_change_nothing() -> anyhow::Result<()> {
    let mesh = Mesh::start()?;
    let node = mesh.node("a", &[guests::ECHO])?;
    let client = mesh_client(&mesh.nats.url(), &mesh.redis.url()).await?;
    let nats = &async_nats::connect(mesh.nats.url()).await?;
    // No headers, no reply subject, bad headers, a bad topic.
    nats.publish("anocast.task.echo", "no headers".into()).await?;
    nats.publish_with_reply("anocast.task.echo", "_INBOX.nowhere", "no headers".into()).await?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Anocast-Request-Id", "r");
    headers.insert("Anocast-Deadline", "tomorrow");
    nats.publish_with_reply_and_headers("anocast.task.echo", "_INBOX.nowhere", headers, "bad".into()).await?;
    nats.flush().await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(stats(&node.url, "echo").await?["received"], 0, "garbage must not reach a plugin");
    let outcome = client.dispatcher().dispatch(topic("echo"), b"still fine".to_vec(), &options(1000, 5000)).await?;
    assert_eq!(outcome.status, Status::Complete);
    assert_eq!(stats(&node.url, "echo").await?["received"], 1);
    mesh.redis.assert_every_key_expires().await
}

#[tokio::test]
async fn the_redis_ledger_closes_atomically_on_the_last_expected_answer() -> anyhow::Result<()> {
    use anocast::ledger::{Declaration, Ledger, RedisLedger, connect_redis};
    let redis = Redis::start()?;
    let ledger = RedisLedger::new(connect_redis(&redis.url(), &Default::default(), Duration::from_secs(5)).await?);
    let ttl = Duration::from_secs(30);
    ledger.open("t-1", ttl).await?;
    assert_eq!(ledger.declare("t-1", "n/a@1", ttl, 3).await?, Declaration { accepted: true, closed: None });
    assert_eq!(ledger.decline("t-1", ttl, 3).await?, None);
    let last = ledger.declare("t-1", "n/c@1", ttl, 3).await?;
    assert_eq!(last, Declaration { accepted: true, closed: Some(vec!["n/a@1".into(), "n/c@1".into()]) });
    assert!(!ledger.declare("t-1", "n/late@1", ttl, 3).await?.accepted, "the window closed with the last answer");
    assert_eq!(ledger.settle("t-1", "n/a@1").await?, 1);

    // Without an expected count, only close() closes the window.
    assert!(ledger.declare("t-2", "n/a@1", ttl, 0).await?.accepted);
    assert_eq!(ledger.decline("t-2", ttl, 0).await?, None);
    assert_eq!(ledger.close("t-2", ttl).await?, ["n/a@1"]);
    assert!(!ledger.declare("t-2", "n/b@1", ttl, 0).await?.accepted);
    ledger.finish("t-2", ttl).await?;
    ledger.finish("t-1", ttl).await?;
    assert!(!ledger.declare("t-1", "n/after@1", ttl, 0).await?.accepted, "finished lists stay closed");

    // One expected group: its answer closes the window at once, without a
    // count; a list the ledger closed is forgotten and stays closed.
    let only = ledger.declare("t-3", "n/a@1", ttl, 1).await?;
    assert_eq!(only, Declaration { accepted: true, closed: Some(vec!["n/a@1".into()]) });
    assert!(!ledger.declare("t-3", "n/late@1", ttl, 1).await?.accepted);
    assert_eq!(ledger.decline("t-4", ttl, 1).await?, Some(vec![]));
    assert!(!ledger.declare("t-4", "n/late@1", ttl, 0).await?.accepted);
    let mut conn = redis::Client::open(redis.url())?.get_multiplexed_async_connection().await?;
    let answers: Vec<String> = redis::cmd("KEYS").arg("anocast:*:answers").query_async(&mut conn).await?;
    assert!(answers.is_empty(), "no count is kept for one expected group: {answers:?}");
    ledger.forget("t-3").await?;
    let left: Vec<String> = redis::cmd("KEYS").arg("anocast:{t-3}*").query_async(&mut conn).await?;
    assert_eq!(left, ["anocast:{t-3}:closed"], "forgetting keeps only the closed marker");
    assert!(!ledger.declare("t-3", "n/after@1", ttl, 0).await?.accepted, "forgotten lists stay closed");
    redis.assert_every_key_expires().await
}

#[tokio::test]
async fn lists_forgotten_in_the_background_are_all_deleted_and_stay_closed() -> anyhow::Result<()> {
    use anocast::ledger::{Ledger, RedisLedger, connect_redis};
    let redis = Redis::start()?;
    let ledger = RedisLedger::new(connect_redis(&redis.url(), &Default::default(), Duration::from_secs(5)).await?);
    let ttl = Duration::from_secs(30);
    let mut conn = redis::Client::open(redis.url())?.get_multiplexed_async_connection().await?;
    // More than one batch of them (the batching itself is not visible from
    // Redis: each list is still one `DEL`).
    let many: Vec<String> = (0..300).map(|i| format!("b-{i}")).collect();
    for key in &many {
        assert!(ledger.declare(key, "n/a@1", ttl, 1).await?.closed.is_some());
        ledger.forget_later(key.clone());
    }
    let lists = async |conn: &mut redis::aio::MultiplexedConnection| -> anyhow::Result<usize> {
        let left: Vec<String> = redis::cmd("KEYS").arg("anocast:{b-*}:interest").query_async(conn).await?;
        Ok(left.len())
    };
    let forgotten = async || Ok(lists(&mut conn).await? == 0);
    wait_until("every list forgotten in the background is gone", Duration::from_secs(10), forgotten).await?;
    assert_eq!(lists(&mut conn).await?, 0, "every list forgotten in the background is gone");
    let markers: Vec<String> = redis::cmd("KEYS").arg("anocast:{b-*}:closed").query_async(&mut conn).await?;
    assert_eq!(markers.len(), many.len(), "their closed markers stay");
    assert!(!ledger.declare("b-299", "n/after@1", ttl, 0).await?.accepted, "and they stay closed");
    redis.assert_every_key_expires().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reloads_its_plugins_and_the_mesh_follows() -> anyhow::Result<()> {
    let mesh = Mesh::start()?;
    let a = mesh.node("a", &[guests::SWAP_V1])?;
    let client = mesh_client(&mesh.nats.url(), &mesh.redis.url()).await?;
    let answered = async |topic_name: &str| -> anyhow::Result<Vec<String>> {
        let outcome = client.dispatcher().dispatch(topic(topic_name), Vec::new(), &options(2000, 10_000)).await?;
        anyhow::ensure!(outcome.status == Status::Complete, "{}", outcome.to_json());
        Ok(outcome.partials.iter().map(|p| p.worker.to_string()).collect())
    };
    assert_eq!(answered("swap").await?, ["a/swap@1.0.0"]);
    let listener = async_nats::connect(mesh.nats.url()).await?;
    let mut events = listener.subscribe("anocast.lifecycle.a").await?;
    listener.flush().await?;

    // A new version, written aside and renamed over the old file.
    let file = std::fs::read_dir(a.dir.path())?.filter_map(Result::ok).map(|e| e.path()).next().context("a file")?;
    let aside = a.dir.path().join(".swap.part");
    std::fs::copy(guests::SWAP_V2, &aside)?;
    std::fs::rename(&aside, &file)?;
    let new_version = async || Ok(answered("swap").await? == ["a/swap@2.0.0"]);
    wait_until("the new version serves", Duration::from_secs(15), new_version).await?;
    // The registry carries the new version to the other dispatchers.
    let seen = async || {
        let nodes = client.mesh_nodes();
        Ok(nodes.iter().any(|n| n.id == "a" && n.plugins.iter().any(|p| p.name == "swap" && p.version == "2.0.0")))
    };
    wait_until("the mesh sees swap 2.0.0", Duration::from_secs(10), seen)
        .await
        .with_context(|| format!("the mesh never saw swap 2.0.0: {:?}", client.mesh_nodes()))?;

    // A plugin dropped in joins the mesh's fan-outs.
    std::fs::copy(guests::ECHO, a.dir.path().join("echo.wasm"))?;
    let dropped_in = async || Ok(answered("echo").await.ok() == Some(vec!["a/echo@1.0.0".to_owned()]));
    wait_until("the dropped-in plugin answers", Duration::from_secs(15), dropped_in).await?;
    // The node announced both changes.
    let mut seen = Vec::new();
    while !(seen.contains(&("reloaded".to_owned(), "swap@2.0.0".to_owned()))
        && seen.contains(&("loaded".to_owned(), "echo@1.0.0".to_owned())))
    {
        let message = tokio::time::timeout(Duration::from_secs(5), events.next()).await?.context("no event")?;
        // A signed statement, by node a's key (the one its registry entry names).
        let line = std::str::from_utf8(&message.payload)?;
        let (key, text) = anocast::anocast_wire::statement::open(anocast::anocast_wire::statement::LIFECYCLE, line)?;
        let a_key = client.mesh_nodes().into_iter().find(|n| n.id == "a").map(|n| n.key).context("node a")?;
        assert_eq!(key.to_string(), a_key);
        let event: Value = serde_json::from_str(text)?;
        let what = format!("{}@{}", event["plugin"].as_str().unwrap_or("?"), event["version"].as_str().unwrap_or("?"));
        seen.push((event["event"].as_str().unwrap_or("?").to_owned(), what));
    }
    let out = std::process::Command::new(EXE).args(["plugins", "list", "--all", "--url", &a.url]).output()?;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("a: echo@1.0.0, swap@2.0.0"), "{table}");
    mesh.redis.assert_every_key_expires().await
}
