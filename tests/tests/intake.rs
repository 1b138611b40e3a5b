//! What a node takes from the mesh is bounded by the node: a node at its
//! task limit answers `busy` at once (and a dispatch that met only busy
//! nodes ends `overloaded`, never `no_interest`), a flood of large tasks
//! leaves its memory bounded and its heartbeats on time, and a task whose
//! deadline lies beyond what any dispatch may ask is refused. Real
//! nats-server, redis-server and `anocast serve` processes.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anocast::{Status, Topic};
use anocast_tests::servers::{Nats, Redis};
use anocast_tests::{Child, PluginDir, guests, mesh_client, options, spawn_serve, wait_until};
use anyhow::Context;
use serde_json::Value;

const EXE: &str = env!("CARGO_BIN_EXE_anocast-cli-under-test");

/// One `anocast serve` process, its HTTP API and its folders.
struct Node {
    process: Child,
    url: String,
    _plugins: PluginDir,
    _data: tempfile::TempDir,
}

/// Starts a node with `guests` in the mesh, with more flags.
fn node(nats: &Nats, redis: &Redis, guests: &[&str], extra: &[&str]) -> anyhow::Result<Node> {
    let plugins = PluginDir::with(guests)?;
    let data = tempfile::tempdir()?;
    let (nats, redis) = (nats.url(), redis.url());
    let data_dir = data.path().to_str().context("utf-8 path")?;
    let mut args = vec!["--nats", &nats, "--redis", &redis, "--liveness", "1s", "--trust-mesh", "--data-dir", data_dir];
    args.extend_from_slice(extra);
    let (process, url) = spawn_serve(EXE, plugins.path(), "intake-node", &args)?;
    Ok(Node { process, url, _plugins: plugins, _data: data })
}

async fn plugins(url: &str) -> anyhow::Result<Value> {
    Ok(reqwest::get(format!("{url}/v1/plugins")).await?.json().await?)
}

/// The resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("no VmRSS")?;
    Ok(kib << 10)
}

/// A task as the wire carries it, made by hand with replies to `inbox`,
/// signed with the tests' client key, which the node trusts to dispatch:
/// what a trusted but hostile (or broken) dispatcher could send.
fn hostile_task(
    topic: &str,
    inbox: &str,
    deadline_ms: u64,
    payload: Vec<u8>,
) -> anyhow::Result<(String, async_nats::HeaderMap, bytes::Bytes)> {
    use anocast::anocast_wire::{NodeKey, TaskFacts, task::payload_digest};
    let key = NodeKey::from_pem(&std::fs::read_to_string(&anocast_tests::client_key().key)?)?;
    let facts = TaskFacts {
        key: key.public(),
        dispatcher: anocast_tests::CLIENT_ID.into(),
        root: key.public(),
        topic: topic.into(),
        request_id: uuid::Uuid::now_v7().to_string(),
        reply_to: inbox.into(),
        payload_digest: payload_digest(&payload),
        content_type: "application/octet-stream".into(),
        deadline_ms,
        expected: vec![],
        ancestry: vec![],
    };
    let mut headers = async_nats::HeaderMap::new();
    for (name, value) in &anocast_tests::task_headers(&key, &facts)?.0 {
        headers.insert(*name, value.as_str());
    }
    Ok((format!("anocast.task.{topic}"), headers, payload.into()))
}

/// A plugin-less client of the mesh, once the echo node answers it.
async fn echo_client(nats: &Nats, redis: &Redis) -> anyhow::Result<(anocast::Host, Topic)> {
    let client = mesh_client(&nats.url(), &redis.url()).await?;
    let echo = Topic::parse("echo")?;
    let ready = async || {
        let outcome = client.dispatcher().dispatch(echo.clone(), b"hi".to_vec(), &options(500, 2000)).await?;
        Ok(outcome.status == Status::Complete)
    };
    wait_until("the node answers", Duration::from_secs(10), ready).await?;
    Ok((client, echo))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

#[tokio::test]
async fn a_node_at_its_task_limit_answers_busy_and_the_dispatch_ends_overloaded() -> anyhow::Result<()> {
    let (nats, redis) = (Nats::start()?, Redis::start()?);
    let node = node(&nats, &redis, &[guests::MISBEHAVE], &["--max-tasks", "2"])?;
    let url = &node.url;
    let client = mesh_client(&nats.url(), &redis.url()).await?;
    let sleep = Topic::parse("misbehave.sleep")?;
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let (dispatcher, sleep) = (client.dispatcher().clone(), sleep.clone());
            tokio::spawn(async move { dispatcher.dispatch(sleep, b"3000".to_vec(), &options(2000, 10_000)).await })
        })
        .collect();
    let two_running = async || Ok(plugins(url).await?["plugins"][0]["in_flight"] == 2);
    wait_until("both slow tasks run", Duration::from_secs(10), two_running).await?;

    // A third is turned away at once: the outcome says overloaded, names
    // the busy worker, and does not wait for the interest window.
    let started = Instant::now();
    let outcome = client.dispatcher().dispatch(sleep.clone(), b"10".to_vec(), &options(2000, 10_000)).await?;
    assert_eq!(outcome.status, Status::Overloaded, "{}", outcome.to_json());
    assert_eq!(outcome.busy.len(), 1, "{}", outcome.to_json());
    assert!(outcome.busy[0].starts_with("intake-node/misbehave@"), "{}", outcome.to_json());
    assert!(started.elapsed() < Duration::from_millis(1500), "waited {:?}", started.elapsed());
    let json = plugins(url).await?;
    assert_eq!(json["rejected"]["busy"], 1, "{json}");
    assert_eq!(json["plugins"][0]["stats"]["busy"], 1, "{json}");

    for task in slow {
        assert_eq!(task.await??.status, Status::Complete);
    }
    // With room again, it runs.
    let outcome = client.dispatcher().dispatch(sleep, b"10".to_vec(), &options(2000, 10_000)).await?;
    assert_eq!(outcome.status, Status::Complete, "{}", outcome.to_json());
    Ok(())
}

#[tokio::test]
async fn a_flood_of_large_tasks_leaves_memory_bounded_and_the_node_alive() -> anyhow::Result<()> {
    let (nats, redis) = (Nats::start()?, Redis::start()?);
    let node = node(&nats, &redis, &[guests::ECHO], &["--max-tasks", "8"])?;
    let (pid, url) = (node.process.0.id(), &node.url);
    let (client, echo) = echo_client(&nats, &redis).await?;
    let before = rss(pid)?;

    // 2,000 tasks of 512 KiB (1 GiB in all), as fast as one client sends.
    let raw = async_nats::connect(nats.url()).await?;
    let inbox = raw.new_inbox();
    let _replies = raw.subscribe(inbox.clone()).await?;
    let mut peak = before;
    let flood_started = Instant::now();
    for n in 0..2000 {
        let (subject, headers, body) = hostile_task("echo", &inbox, now_ms() + 5000, vec![b'x'; 512 << 10])?;
        raw.publish_with_reply_and_headers(subject, inbox.clone(), headers, body).await?;
        if n % 100 == 0 {
            raw.flush().await?;
            peak = peak.max(rss(pid)?);
        }
    }
    raw.flush().await?;
    let settle_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < settle_until {
        peak = peak.max(rss(pid)?);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "flood of 1 GiB in {:?}: node RSS {} MiB before, {} MiB at peak",
        flood_started.elapsed(),
        before >> 20,
        peak >> 20
    );
    // Unbounded, the node held the flood (3.8 GB for 2,000 tasks).
    assert!(peak < before + (400 << 20), "RSS grew from {} MiB to {} MiB", before >> 20, peak >> 20);

    // The node stayed in the mesh and answers.
    let outcome = client.dispatcher().dispatch(echo, b"still there?".to_vec(), &options(1000, 5000)).await?;
    assert_eq!(outcome.status, Status::Complete, "{}", outcome.to_json());
    let json = plugins(url).await?;
    assert!(json["rejected"]["busy"].as_u64().is_some_and(|n| n > 0), "{json}");
    Ok(())
}

#[tokio::test]
async fn a_task_whose_deadline_lies_beyond_any_dispatch_is_refused() -> anyhow::Result<()> {
    let (nats, redis) = (Nats::start()?, Redis::start()?);
    let node = node(&nats, &redis, &[guests::ECHO], &[])?;
    let url = &node.url;
    let _client = echo_client(&nats, &redis).await?;

    let raw = async_nats::connect(nats.url()).await?;
    let inbox = raw.new_inbox();
    let mut replies = raw.subscribe(inbox.clone()).await?;
    for deadline in [u64::MAX, now_ms() + 2 * 3600 * 1000] {
        let (subject, headers, body) = hostile_task("echo", &inbox, deadline, b"far".to_vec())?;
        raw.publish_with_reply_and_headers(subject, inbox.clone(), headers, body).await?;
    }
    raw.flush().await?;
    let refused = async || Ok(plugins(url).await?["rejected"]["far_deadlines"] == 2);
    wait_until("both tasks are refused", Duration::from_secs(5), refused).await?;
    // Nothing ran: no reply came, and every key in Redis expires.
    use futures::StreamExt;
    let reply = tokio::time::timeout(Duration::from_millis(300), replies.next()).await;
    assert!(reply.is_err(), "a task with a far deadline was answered");
    redis.assert_every_key_expires().await?;
    Ok(())
}

#[tokio::test]
async fn the_plugin_less_client_delivers_every_settle_decision_before_it_exits() -> anyhow::Result<()> {
    let (nats, redis) = (Nats::start()?, Redis::start()?);
    let node = node(&nats, &redis, &[guests::STAGER], &[])?;
    let (nats_url, redis_url) = (nats.url(), redis.url());
    const RUNS: u64 = 20;
    for n in 0..RUNS {
        let out = std::process::Command::new(EXE)
            .args(["dispatch", "--nats", &nats_url, "--redis", &redis_url, "--trust-mesh", "--settle", "commit"])
            .arg("--key")
            .arg(&anocast_tests::client_key().key)
            .args(["stage.write", &format!("run={n}")])
            .env("XDG_DATA_HOME", std::env::temp_dir().join("anocast-tests-data"))
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("\"settle\": \"commit\""), "{stdout}");
    }
    // Every decision the client printed reached the node (it lost 2-4 of
    // 20 when it exited without flushing).
    let all = async || Ok(plugins(&node.url).await?["settle"]["committed"] == RUNS);
    let waited = wait_until("every commit is applied", Duration::from_secs(5), all).await;
    waited.with_context(|| format!("{}", futures::executor::block_on(plugins(&node.url)).unwrap_or_default()))?;
    Ok(())
}

#[tokio::test]
async fn a_topic_nobody_serves_is_no_interest_and_no_malformed_reply() -> anyhow::Result<()> {
    let (nats, redis) = (Nats::start()?, Redis::start()?);
    let _node = node(&nats, &redis, &[guests::ECHO], &[])?;
    let client = mesh_client(&nats.url(), &redis.url()).await?;
    let outcome = client.dispatcher().dispatch(Topic::parse("nobody.here")?, vec![], &options(300, 2000)).await?;
    assert_eq!(outcome.status, Status::NoInterest);
    // NATS's "no responders" status came back to the inbox; it is not a
    // malformed reply.
    let stats = &client.security().context("distributed")?.stats;
    assert_eq!(stats.malformed.load(std::sync::atomic::Ordering::Relaxed), 0);
    Ok(())
}

#[tokio::test]
async fn a_payload_larger_than_the_bus_carries_is_413() -> anyhow::Result<()> {
    let (nats, redis) = (Nats::start()?, Redis::start()?);
    let node = node(&nats, &redis, &[guests::ECHO], &[])?;
    let http = reqwest::Client::new();
    // NATS carries 1 MiB by default; the HTTP API alone would take 8 MiB.
    // The node answers from the declared length, before the body: asked
    // over a raw connection, so that the client is not still writing the
    // body when the node closes it.
    for length in [1536 << 10, 1 << 20] {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(node.url.trim_start_matches("http://")).await?;
        let head = format!("POST /v1/dispatch/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n\r\n");
        stream.write_all(head.as_bytes()).await?;
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await??;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("larger than this node accepts"), "{answer}");
    }
    let response = http.post(format!("{}/v1/dispatch/echo", node.url)).body(vec![b'x'; 900 << 10]).send().await?;
    assert_eq!(response.status().as_u16(), 200);
    // A dispatcher in a process of its own says the same.
    let client = mesh_client(&nats.url(), &redis.url()).await?;
    let err = client
        .dispatcher()
        .dispatch(Topic::parse("echo")?, vec![b'x'; 1 << 20], &options(500, 2000))
        .await
        .expect_err("too large");
    assert!(err.to_string().contains("the bus carries at most"), "{err}");
    Ok(())
}
