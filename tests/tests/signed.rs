//! Signed tasks, decisions and registry entries (protocol 2), attacked
//! from a NATS or Redis client of the tests' own, as anyone on the same
//! network could: against real `nats-server` and `redis-server` processes
//! and an `anocast serve` node.

use std::time::Duration;

use anocast::anocast_wire::{NodeKey, TaskFacts, statement, task::payload_digest};
use anocast::settle::SettlePolicy;
use anocast::{DispatchOptions, Status, Topic};
use anocast_tests::servers::{Nats, Redis};
use anocast_tests::{Child, PluginDir, guests, mesh_client, mesh_client_with, options, spawn_serve, wait_until};
use anyhow::Context;
use futures::StreamExt;
use serde_json::Value;

const EXE: &str = env!("CARGO_BIN_EXE_anocast-cli-under-test");

struct Node {
    _process: Child,
    url: String,
    _dir: PluginDir,
    _data: tempfile::TempDir,
}

/// A node trusting the mesh's registered nodes and the tests' client key.
fn node(nats: &Nats, redis: &Redis, id: &str, guests: &[&str]) -> anyhow::Result<Node> {
    let dir = PluginDir::with(guests)?;
    let data = tempfile::tempdir()?;
    let (nats, redis) = (nats.url(), redis.url());
    let data_dir = data.path().to_str().context("utf-8 path")?;
    let args = ["--nats", &nats, "--redis", &redis, "--liveness", "1s", "--trust-mesh", "--data-dir", data_dir];
    let (process, url) = spawn_serve(EXE, dir.path(), id, &args)?;
    Ok(Node { _process: process, url, _dir: dir, _data: data })
}

async fn plugins(url: &str) -> anyhow::Result<Value> {
    Ok(reqwest::get(format!("{url}/v1/plugins")).await?.json().await?)
}

/// Waits until the node's rejection counter `name` reaches `at_least`.
async fn rejected(url: &str, name: &str, at_least: u64) -> anyhow::Result<()> {
    let mut seen = Value::Null;
    let reached = async || {
        seen = plugins(url).await?["rejected"].clone();
        Ok(seen[name].as_u64().is_some_and(|n| n >= at_least))
    };
    wait_until(&format!("{name} reaches {at_least}"), Duration::from_secs(10), reached)
        .await
        .with_context(|| format!("rejections: {seen}"))
}

async fn received(url: &str, plugin: &str) -> anyhow::Result<u64> {
    let all = plugins(url).await?;
    let stats = all["plugins"].as_array().and_then(|p| p.iter().find(|p| p["name"] == plugin)).context("plugin")?;
    stats["stats"]["received"].as_u64().context("received")
}

/// Waits for a round trip to the server on `client`'s connection, so that
/// what it sent before (a subscription) has been processed: `flush` only
/// writes to the socket. A request nobody answers comes back at once as
/// "no responders".
async fn round_trip(client: &async_nats::Client) {
    let _ = client.request("anocast-tests.round-trip", "".into()).await;
}

/// A copy of `headers` with `name` set to `value` (or removed).
fn with(headers: &async_nats::HeaderMap, name: &str, value: Option<&str>) -> async_nats::HeaderMap {
    let mut out = async_nats::HeaderMap::new();
    for (n, values) in headers.iter().filter(|(n, _)| n.to_string() != name) {
        for v in values {
            out.append(n.clone(), v.clone());
        }
    }
    if let Some(value) = value {
        out.insert(name, value);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_altered_replayed_and_old_tasks_run_nowhere() -> anyhow::Result<()> {
    let (nats, redis) = (Nats::start()?, Redis::start()?);
    let a = node(&nats, &redis, "a", &[guests::ECHO])?;
    let client = mesh_client(&nats.url(), &redis.url()).await?;
    let spy = async_nats::connect(nats.url()).await?;
    let mut tasks = spy.subscribe("anocast.task.echo").await?;
    round_trip(&spy).await;

    // A real dispatch, whose signed task the spy keeps.
    let outcome = client.dispatcher().dispatch(Topic::parse("echo")?, b"real".to_vec(), &options(2000, 10_000)).await?;
    assert_eq!(outcome.status, Status::Complete, "{}", outcome.to_json());
    let real = tokio::time::timeout(Duration::from_secs(5), tasks.next()).await?.context("the spy saw the task")?;
    let (headers, reply) = (real.headers.clone().context("headers")?, real.reply.clone().context("reply subject")?);
    assert_eq!(received(&a.url, "echo").await?, 1);

    // Replayed as is: the node ran it once already.
    spy.publish_with_reply_and_headers("anocast.task.echo", reply.clone(), headers.clone(), real.payload.clone())
        .await?;
    rejected(&a.url, "replayed_tasks", 1).await?;
    // A shorter expected list, a later deadline, another payload, another
    // inbox: the signature no longer verifies.
    let later = (std::time::SystemTime::now() + Duration::from_secs(600))
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis()
        .to_string();
    for altered in [with(&headers, "Anocast-Expected", Some("other")), with(&headers, "Anocast-Deadline", Some(&later))]
    {
        spy.publish_with_reply_and_headers("anocast.task.echo", reply.clone(), altered, real.payload.clone()).await?;
    }
    spy.publish_with_reply_and_headers("anocast.task.echo", reply.clone(), headers.clone(), "forged".into()).await?;
    spy.publish_with_reply_and_headers("anocast.task.echo", "_INBOX.spy.1", headers.clone(), real.payload.clone())
        .await?;
    rejected(&a.url, "forged_tasks", 4).await?;
    // Protocol 1: no version header, no signature.
    let old = with(&with(&headers, "Anocast-Protocol", None), "Anocast-Signature", None);
    spy.publish_with_reply_and_headers("anocast.task.echo", reply.clone(), old, real.payload.clone()).await?;
    rejected(&a.url, "old_protocol", 1).await?;

    // Well signed, by a key the node does not trust to dispatch: answered
    // `untrusted`, with a signed envelope that binds this very task.
    let stranger = NodeKey::generate()?;
    let inbox = spy.new_inbox();
    let mut answers = spy.subscribe(inbox.clone()).await?;
    round_trip(&spy).await;
    let deadline = (std::time::SystemTime::now() + Duration::from_secs(5)).duration_since(std::time::UNIX_EPOCH)?;
    let facts = TaskFacts {
        key: stranger.public(),
        dispatcher: "stranger".into(),
        root: stranger.public(),
        topic: "echo".into(),
        request_id: "r-stranger".into(),
        reply_to: inbox.clone(),
        payload_digest: payload_digest(b"hi"),
        content_type: "text/plain".into(),
        deadline_ms: deadline.as_millis() as u64,
        expected: vec![],
        ancestry: vec![],
    };
    let (pairs, seal) = anocast_tests::task_headers(&stranger, &facts)?;
    let mut forged = async_nats::HeaderMap::new();
    for (name, value) in &pairs {
        forged.insert(*name, value.as_str());
    }
    spy.publish_with_reply_and_headers("anocast.task.echo", inbox, forged, "hi".into()).await?;
    let answer = tokio::time::timeout(Duration::from_secs(5), answers.next()).await?.context("an answer")?;
    let envelope = anocast::anocast_wire::Envelope::open(&answer.payload)?;
    assert_eq!(envelope.task_digest, seal.digest, "the answer binds the task");
    assert_eq!(envelope.ack.map(|a| a.interest), Some(anocast::anocast_wire::Interest::Untrusted));
    assert!(envelope.result.is_none());
    rejected(&a.url, "untrusted_dispatchers", 1).await?;

    assert_eq!(received(&a.url, "echo").await?, 1, "none of them reached the plugin");
    // And the mesh still works.
    let outcome =
        client.dispatcher().dispatch(Topic::parse("echo")?, b"again".to_vec(), &options(2000, 10_000)).await?;
    assert_eq!(outcome.status, Status::Complete, "{}", outcome.to_json());
    redis.assert_every_key_expires().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_key_no_node_trusts_is_told_unauthorized() -> anyhow::Result<()> {
    let (nats, redis) = (Nats::start()?, Redis::start()?);
    let a = node(&nats, &redis, "a", &[guests::ECHO])?;
    let keys = tempfile::tempdir()?;
    let key = keys.path().join("stranger.key");
    anocast::trust::write_key(&key, &NodeKey::generate()?, Some("client"), "dispatch")?;
    let client = mesh_client_with(&nats.url(), &redis.url(), |mesh| {
        mesh.trust_mesh = true;
        mesh.key = Some(key.clone());
    })
    .await?;
    let outcome = client.dispatcher().dispatch(Topic::parse("echo")?, b"hi".to_vec(), &options(2000, 10_000)).await?;
    assert_eq!(outcome.status, Status::Unauthorized, "{}", outcome.to_json());
    assert_eq!(outcome.refused, ["a/echo@1.0.0"]);
    assert_eq!(received(&a.url, "echo").await?, 0);
    rejected(&a.url, "untrusted_dispatchers", 1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_root_dispatcher_can_settle_its_transaction() -> anyhow::Result<()> {
    let (nats, redis) = (Nats::start()?, Redis::start()?);
    let a = node(&nats, &redis, "a", &[guests::STAGER])?;
    let client = mesh_client(&nats.url(), &redis.url()).await?;
    let manual = DispatchOptions { settle: SettlePolicy::Manual, ..options(2000, 10_000) };
    let outcome = client.dispatcher().dispatch(Topic::parse("stage.write")?, b"color=red".to_vec(), &manual).await?;
    assert!(outcome.status == Status::Complete && outcome.staged, "{}", outcome.to_json());
    let id = outcome.request_id.clone();

    let spy = async_nats::connect(nats.url()).await?;
    let attacker = NodeKey::generate()?;
    let mut commit = async_nats::HeaderMap::new();
    let signature = anocast::anocast_wire::settle::sign(&attacker, &id, true)?;
    for (name, value) in [
        ("Anocast-Protocol", "2".to_owned()),
        ("Anocast-Request-Id", id.clone()),
        ("Anocast-Decision", "commit".into()),
        ("Anocast-Key", attacker.public().to_string()),
        ("Anocast-Signature", hex::encode(signature)),
    ] {
        commit.insert(name, value.as_str());
    }
    // Well signed, by another key than the client's: applies nothing.
    spy.publish_with_headers("anocast.settle", commit.clone(), "".into()).await?;
    // The attacker's signature under the client's key: does not verify.
    let client_key = client.security().context("distributed")?.key().public().to_string();
    spy.publish_with_headers("anocast.settle", with(&commit, "Anocast-Key", Some(&client_key)), "".into()).await?;
    // Unsigned, as protocol 1 sent it.
    let unsigned = with(&with(&commit, "Anocast-Signature", None), "Anocast-Protocol", None);
    spy.publish_with_headers("anocast.settle", unsigned, "".into()).await?;
    spy.flush().await?;
    rejected(&a.url, "forged_decisions", 1).await?;
    rejected(&a.url, "old_protocol", 1).await?;
    let settle = async || Ok(plugins(&a.url).await?["settle"]["foreign_decisions"].as_u64() == Some(1));
    wait_until("the foreign decision is counted", Duration::from_secs(10), settle).await?;
    let mut conn = redis::Client::open(redis.url())?.get_multiplexed_async_connection().await?;
    let key = anocast::settle::redis_key("stager", "color");
    let value: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
    assert_eq!(value, None, "no forged commit was applied");
    assert_eq!(plugins(&a.url).await?["settle"]["committed"], 0);

    // The client's own decision applies.
    client.dispatcher().settle(&id, anocast::Decision::Commit).await;
    let committed = async || Ok(plugins(&a.url).await?["settle"]["committed"].as_u64() == Some(1));
    wait_until("the client's commit is applied", Duration::from_secs(10), committed).await?;
    let value: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
    assert_eq!(value.as_deref(), Some("red"));
    redis.assert_every_key_expires().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_malformed_registry_entries_are_ignored() -> anyhow::Result<()> {
    let (nats, redis) = (Nats::start()?, Redis::start()?);
    let a = node(&nats, &redis, "a", &[guests::ECHO])?;
    let mut conn = redis::Client::open(redis.url())?.get_multiplexed_async_connection().await?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
    let forger = NodeKey::generate()?;
    let other = NodeKey::generate()?;
    let info = |id: &str, key: &NodeKey, plugin: &str| {
        serde_json::json!({"id": id, "key": key.public().to_string(), "signed_ms": now,
            "plugins": [{"name": plugin, "version": "1", "topics": ["echo"]}]})
        .to_string()
    };
    let entries = [
        // Protocol 1: unsigned JSON.
        ("unsigned", info("unsigned", &forger, "echo")),
        // A name with a newline, signed.
        ("newline", statement::seal(statement::NODE, &info("newline", &forger, "echo\nx"), &forger)?),
        // Signed by another key than the one it names.
        ("borrowed", statement::seal(statement::NODE, &info("borrowed", &other, "ghost"), &forger)?),
        // Signed long ago (replayed).
        (
            "stale",
            statement::seal(
                statement::NODE,
                &info("stale", &forger, "ghost").replace(&now.to_string(), &(now - 600_000).to_string()),
                &forger,
            )?,
        ),
    ];
    for (id, value) in &entries {
        let _: () = redis::pipe()
            .cmd("SET")
            .arg(format!("anocast:{{nodes}}:{id}"))
            .arg(value)
            .arg("PX")
            .arg(60_000)
            .cmd("ZADD")
            .arg("anocast:{nodes}")
            .arg(now + 60_000)
            .arg(id)
            .query_async(&mut conn)
            .await?;
    }
    // A self-signed entry is believed with --trust-mesh, by no one else.
    let ghost = statement::seal(statement::NODE, &info("ghost", &forger, "ghost"), &forger)?;
    let _: () = redis::pipe()
        .cmd("SET")
        .arg("anocast:{nodes}:ghost")
        .arg(&ghost)
        .arg("PX")
        .arg(60_000)
        .cmd("ZADD")
        .arg("anocast:{nodes}")
        .arg(now + 60_000)
        .arg("ghost")
        .query_async(&mut conn)
        .await?;
    let mesh = mesh_client(&nats.url(), &redis.url()).await?;
    let seen: Vec<String> = mesh.mesh_nodes().into_iter().map(|n| n.id).collect();
    assert_eq!(seen, ["a", "ghost"], "only signed, fresh, well-formed entries");
    let untrusted =
        mesh.security().context("distributed")?.stats.untrusted_entries.load(std::sync::atomic::Ordering::Relaxed);
    assert!(untrusted >= 4, "{untrusted} entries counted");
    let careful = mesh_client_with(&nats.url(), &redis.url(), |mesh| {
        mesh.trust_mesh = false;
        mesh.trust = vec![anocast_tests::client_key().trust.clone()];
    })
    .await?;
    let seen: Vec<String> = careful.mesh_nodes().into_iter().map(|n| n.id).collect();
    assert!(seen.is_empty(), "without --trust-mesh, no self-signed entry is believed: {seen:?}");

    // None of it broke a dispatch: the forged groups are not awaited for
    // long, and the real worker answers.
    let outcome = mesh.dispatcher().dispatch(Topic::parse("echo")?, b"hi".to_vec(), &options(300, 10_000)).await?;
    assert_eq!(outcome.status, Status::Complete, "{}", outcome.to_json());
    assert_eq!(outcome.partials.len(), 1);
    drop(a);
    Ok(())
}
