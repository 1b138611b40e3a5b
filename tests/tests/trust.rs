//! Signed replies and trust in distributed mode (issue 4): an eavesdropper
//! on the bus replays, duplicates, tampers with and forges replies (one of
//! them with a weak key), and a
//! node whose key nobody trusts declares itself; none of it changes an
//! outcome, and every rejection is counted.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use anocast::anocast_wire::{Envelope, NodeKey, Worker};
use anocast::{DispatchOptions, Host, Status, Topic};
use anocast_tests::servers::{Nats, Redis};
use anocast_tests::{Child, PluginDir, guests, mesh_client_with, spawn_serve, wait_until};
use anyhow::Context;
use futures::StreamExt;

const EXE: &str = env!("CARGO_BIN_EXE_anocast-cli-under-test");

/// A node process with its own key file, and the public key to trust it.
struct Node {
    _process: Child,
    _dir: PluginDir,
    _keys: tempfile::TempDir,
    id: String,
    public: String,
}

fn node(nats: &Nats, redis: &Redis, id: &str, guests: &[&str]) -> anyhow::Result<Node> {
    let dir = PluginDir::with(guests)?;
    let keys = tempfile::tempdir()?;
    let key_file = keys.path().join("node.key");
    let key = NodeKey::generate()?;
    anocast::trust::write_key(&key_file, &key, Some(id), anocast::trust::NODE_ROLES)?;
    let key_arg = key_file.to_str().context("utf-8 path")?;
    let (nats, redis) = (nats.url(), redis.url());
    let args = ["--nats", &nats, "--redis", &redis, "--liveness", "1s", "--key", key_arg, "--trust-mesh"];
    let (process, _url) = spawn_serve(EXE, dir.path(), id, &args)?;
    Ok(Node { _process: process, _dir: dir, _keys: keys, id: id.to_owned(), public: key.public().to_string() })
}

/// A plugin-less dispatcher trusting only the keys of `trusted`, each for
/// its own node id, listed in a trust file (kept alive with the client).
async fn client(nats: &Nats, redis: &Redis, trusted: &[&Node]) -> anyhow::Result<(Host, tempfile::NamedTempFile)> {
    let file = tempfile::NamedTempFile::new()?;
    let lines: String = trusted.iter().map(|n| format!("{} {} reply\n", n.public, n.id)).collect();
    std::fs::write(file.path(), format!("# the trusted nodes\n{lines}"))?;
    let host = mesh_client_with(&nats.url(), &redis.url(), |mesh| mesh.trust = vec![file.path().to_owned()]).await?;
    Ok((host, file))
}

async fn converge(host: &Host, count: usize) -> anyhow::Result<()> {
    let converged = async || Ok(host.mesh_nodes().len() == count);
    wait_until(&format!("the mesh converged to {count} nodes"), Duration::from_secs(10), converged).await
}

fn options(grace_ms: u64, timeout_ms: u64) -> DispatchOptions {
    DispatchOptions {
        grace: Duration::from_millis(grace_ms),
        timeout: Duration::from_millis(timeout_ms),
        ..DispatchOptions::default()
    }
}

fn workers(outcome: &anocast::Outcome) -> Vec<String> {
    outcome.partials.iter().map(|p| p.worker.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_duplicated_tampered_forged_and_unsigned_replies_change_nothing() -> anyhow::Result<()> {
    let (nats, redis) = (Nats::start()?, Redis::start()?);
    let a = node(&nats, &redis, "a", &[guests::ECHO])?;
    let b = node(&nats, &redis, "b", &[guests::MISBEHAVE])?;
    let (client, _trust) = client(&nats, &redis, &[&a, &b]).await?;
    converge(&client, 2).await?;

    // The eavesdropper sees every reply (NATS without authorization).
    let spy = async_nats::connect(nats.url()).await?;
    let mut replies = spy.subscribe("_INBOX.>").await?;
    spy.flush().await?;

    // A genuine reply from an earlier dispatch, to replay later.
    let first = client.dispatcher().dispatch(Topic::parse("echo")?, b"first".to_vec(), &options(2000, 10_000)).await?;
    assert_eq!(first.status, Status::Complete);
    let mut next_result = async |not_of: &str| -> anyhow::Result<async_nats::Message> {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(5), replies.next()).await?.context("no reply")?;
            let envelope = Envelope::open(&message.payload)?;
            if envelope.result.is_some() && envelope.request_id != not_of {
                return Ok(message);
            }
        }
    };
    let old = next_result("").await?.payload;

    // `race.x`: echo (node a) answers at once, misbehave (node b) after
    // 400 ms, which leaves the dispatch open while the spy acts.
    let (dispatcher, race) = (client.dispatcher().clone(), Topic::parse("race.x")?);
    let dispatch =
        tokio::spawn(async move { dispatcher.dispatch(race, b"400".to_vec(), &options(3000, 10_000)).await });
    // Echo's partial (a result, whose last signed bytes are its payload).
    let genuine = next_result(&first.request_id).await?;
    let inbox = genuine.subject.clone();
    // Duplicated.
    spy.publish(inbox.clone(), genuine.payload.clone()).await?;
    // Tampered: one byte of the payload changed.
    let mut tampered = genuine.payload.to_vec();
    let at = tampered.len() - 65;
    tampered[at] ^= 1;
    spy.publish(inbox.clone(), tampered.into()).await?;
    // Replayed from the earlier request.
    spy.publish(inbox.clone(), old).await?;
    // Unsigned.
    spy.publish(inbox.clone(), "I am echo, trust me".into()).await?;
    // Forged: a well-formed envelope for this request, signed by a key
    // nobody trusts, claiming to be node a's echo.
    let opened = Envelope::open(&genuine.payload)?;
    let mallory = NodeKey::generate()?;
    let forged = Envelope {
        worker: Worker { key: mallory.public(), ..opened.worker.clone() },
        result: Some(Ok(b"forged".to_vec())),
        timestamp_ms: SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?.as_millis() as u64,
        ..opened.clone()
    };
    spy.publish(inbox.clone(), forged.seal(&mallory)?.into()).await?;
    // Forged with a trusted node's key in the envelope, signed by another.
    let mut impostor = Envelope { result: Some(Ok(b"impostor".to_vec())), ..opened.clone() }.unsigned()?;
    impostor.extend_from_slice(&mallory.sign(&impostor)?);
    spy.publish(inbox.clone(), impostor.into()).await?;
    // A weak key: the identity point, for which the signature (R = the
    // identity, s = 0) satisfies the verification equation whatever the
    // message. Strict decoding refuses the key itself.
    let mut weak = Envelope { result: Some(Ok(b"weak".to_vec())), ..opened.clone() }.unsigned()?;
    let key_at = 16 + 8 + 2 + opened.topic.len() + 1 + opened.request_id.len() + 32;
    let identity: [u8; 32] = std::array::from_fn(|i| u8::from(i == 0));
    weak[key_at..key_at + 32].copy_from_slice(&identity);
    weak.extend_from_slice(&identity);
    weak.extend_from_slice(&[0; 32]);
    spy.publish(inbox.clone(), weak.into()).await?;
    // Signed with node a's own key, but two minutes old (as from a node
    // whose clock is off, or kept to be replayed): outside the skew.
    let a_key = NodeKey::from_pem(&std::fs::read_to_string(a._keys.path().join("node.key"))?)?;
    let stale =
        Envelope { result: Some(Ok(b"stale".to_vec())), timestamp_ms: opened.timestamp_ms - 120_000, ..opened.clone() };
    spy.publish(inbox, stale.seal(&a_key)?.into()).await?;
    spy.flush().await?;

    let outcome = dispatch.await??;
    assert_eq!(outcome.status, Status::Complete, "{}", outcome.to_json());
    assert_eq!(workers(&outcome), ["a/echo@1.0.0", "b/misbehave@0.1.0"]);
    let payloads: Vec<_> = outcome.partials.iter().map(|p| p.result.clone()).collect();
    assert_eq!(payloads, [Ok(b"400".to_vec()), Ok(b"slow".to_vec())]);
    assert!(outcome.untrusted.is_empty());

    let stats = &client.security().context("distributed mode has security")?.stats;
    let count = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    assert_eq!(count(&stats.duplicate), 1, "duplicate");
    assert_eq!(count(&stats.bad_signature), 2, "tampered and impostor");
    assert_eq!(count(&stats.replayed), 1, "replayed");
    assert_eq!(count(&stats.malformed), 2, "unsigned and weak key");
    assert_eq!(count(&stats.untrusted_key), 1, "forged");
    assert_eq!(count(&stats.clock_skew), 1, "stale");
    redis.assert_every_key_expires().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declaration_from_an_untrusted_node_holds_no_dispatch_hostage() -> anyhow::Result<()> {
    let (nats, redis) = (Nats::start()?, Redis::start()?);
    let a = node(&nats, &redis, "a", &[guests::MISBEHAVE])?;
    let _u = node(&nats, &redis, "u", &[guests::ECHO])?;
    let (client, _trust) = client(&nats, &redis, &[&a]).await?;
    // The client believes only the registry entries of keys it trusts.
    converge(&client, 1).await?;
    assert_eq!(client.mesh_nodes()[0].id, "a");

    // Node u's echo declares at once, while the trusted misbehave (node a)
    // takes 300 ms to decide, so u's entry is on the list when a's answer
    // closes the window; u's replies are rejected, and its entry is not
    // waited for.
    let started = Instant::now();
    let outcome =
        client.dispatcher().dispatch(Topic::parse("race.y")?, b"300".to_vec(), &options(2000, 20_000)).await?;
    assert_eq!(outcome.status, Status::Complete, "{}", outcome.to_json());
    assert_eq!(workers(&outcome), ["a/misbehave@0.1.0"]);
    assert_eq!(outcome.untrusted, ["u/echo@1.0.0"]);
    assert!(outcome.missing.is_empty());
    assert!(started.elapsed() < Duration::from_secs(5), "held hostage for {:?}", started.elapsed());
    let stats = &client.security().context("security")?.stats;
    assert_eq!(stats.untrusted_declarations.load(Ordering::Relaxed), 1);
    assert!(stats.untrusted_key.load(Ordering::Relaxed) >= 1, "u's acknowledgement was rejected");
    redis.assert_every_key_expires().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_done_on_its_first_poll_sends_one_envelope() -> anyhow::Result<()> {
    let (nats, redis) = (Nats::start()?, Redis::start()?);
    let a = node(&nats, &redis, "a", &[guests::ECHO, guests::MISBEHAVE])?;
    let (client, _trust) = client(&nats, &redis, &[&a]).await?;
    converge(&client, 1).await?;
    let spy = async_nats::connect(nats.url()).await?;
    let mut replies = spy.subscribe("_INBOX.>").await?;
    spy.flush().await?;

    // Echo answers at once; misbehave sleeps 20 ms in `handle` (an async
    // host call), so its result is never ready on the first poll.
    const DISPATCHES: usize = 10;
    for _ in 0..DISPATCHES {
        for (topic, payload, worker) in [("echo", "hi", "a/echo@1.0.0"), ("misbehave.sleep", "20", "a/misbehave@0.1.0")]
        {
            let outcome = client
                .dispatcher()
                .dispatch(Topic::parse(topic)?, payload.as_bytes().to_vec(), &options(2000, 10_000))
                .await?;
            assert_eq!(outcome.status, Status::Complete, "{}", outcome.to_json());
            assert_eq!(workers(&outcome), [worker]);
        }
    }
    // Per plugin: (envelopes with both parts, acknowledgements alone,
    // results alone), read until every dispatch's result is in.
    let mut seen: std::collections::BTreeMap<String, (usize, usize, usize)> = Default::default();
    let results = |seen: &std::collections::BTreeMap<String, (usize, usize, usize)>, plugin: &str| {
        seen.get(plugin).map_or(0, |c| c.0 + c.2)
    };
    while results(&seen, "echo") < DISPATCHES || results(&seen, "misbehave") < DISPATCHES {
        let message = tokio::time::timeout(Duration::from_secs(5), replies.next()).await?.context("no reply")?;
        let envelope = Envelope::open(&message.payload)?;
        let counts = seen.entry(envelope.worker.plugin.clone()).or_default();
        match (envelope.ack.is_some(), envelope.result.is_some()) {
            (true, true) => counts.0 += 1,
            (true, false) => counts.1 += 1,
            _ => counts.2 += 1,
        }
    }
    assert_eq!(seen["misbehave"], (0, DISPATCHES, DISPATCHES), "misbehave acknowledges, then replies");
    let echo = seen["echo"];
    // Echo's call may be interrupted by an epoch tick (every 10 ms) now and
    // then, and then goes as two replies; never as anything else.
    assert_eq!(echo.0 + echo.2, DISPATCHES);
    assert_eq!(echo.1, echo.2);
    assert!(echo.0 >= DISPATCHES / 2, "echo's replies were seldom combined: {echo:?}");
    redis.assert_every_key_expires().await
}

#[tokio::test]
async fn a_key_removed_from_the_trust_file_is_revoked_without_a_restart() -> anyhow::Result<()> {
    let (nats, redis) = (Nats::start()?, Redis::start()?);
    let a = node(&nats, &redis, "a", &[guests::ECHO])?;
    let (client, trust) = client(&nats, &redis, &[&a]).await?;
    converge(&client, 1).await?;
    let echo = |client: &Host| {
        let dispatcher = client.dispatcher().clone();
        async move { anyhow::Ok(dispatcher.dispatch(Topic::parse("echo")?, b"hi".to_vec(), &options(500, 2000)).await?) }
    };
    assert_eq!(echo(&client).await?.status, Status::Complete);

    // Revoke: the file is replaced (written aside, then renamed over, as
    // editors do) without node a's line.
    let aside = trust.path().with_extension("new");
    std::fs::write(&aside, "# nobody\n")?;
    std::fs::rename(&aside, trust.path())?;
    let revoked = async || Ok(echo(&client).await?.partials.is_empty());
    wait_until("node a's replies are refused", Duration::from_secs(5), revoked).await?;
    let outcome = echo(&client).await?;
    assert_eq!(outcome.status, Status::NoInterest, "{}", outcome.to_json());
    // Nor is its registry entry believed any more.
    assert!(client.mesh_nodes().is_empty(), "{:?}", client.mesh_nodes());

    // A broken file changes nothing; trusting the key again restores it.
    std::fs::write(trust.path(), "not a key\n")?;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(echo(&client).await?.partials.is_empty());
    std::fs::write(trust.path(), format!("{} {} reply\n", a.public, a.id))?;
    let restored = async || Ok(echo(&client).await?.status == Status::Complete);
    wait_until("node a is trusted again", Duration::from_secs(5), restored).await
}
