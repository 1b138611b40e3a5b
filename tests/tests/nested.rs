//! Nested dispatch in embedded mode: workers dispatching sub-tasks, with the
//! depth limit, cycle refusal and deadlines. The relays (`relay-a` on
//! `chain.a`, `relay-b`, `relay-c`) follow the hops in their payload (see
//! `anocast_test_guests::relay`).

use std::time::{Duration, Instant};

use anocast::{NestingConfig, Outcome, RuntimeConfig, Status, Topic};
use anocast_tests::{PluginDir, guests, options, start_host, start_host_with, wait_until};

fn topic(t: &str) -> Topic {
    Topic::parse(t).expect("valid topic")
}

/// The text of the one partial of `outcome`, which must be ok.
fn only_reply(outcome: &Outcome) -> anyhow::Result<String> {
    anyhow::ensure!(outcome.partials.len() == 1, "expected one partial: {outcome:?}");
    match &outcome.partials[0].result {
        Ok(bytes) => Ok(String::from_utf8_lossy(bytes).into_owned()),
        Err(err) => anyhow::bail!("{} failed: {err}", outcome.partials[0].worker),
    }
}

fn relays() -> anyhow::Result<PluginDir> {
    PluginDir::with(&[guests::RELAY_A, guests::RELAY_B, guests::RELAY_C])
}

#[tokio::test]
async fn a_worker_dispatches_a_sub_task_and_replies_with_its_outcome() -> anyhow::Result<()> {
    let dir = relays()?;
    let host = start_host(&dir, RuntimeConfig::default()).await?;
    let outcome =
        host.dispatcher().dispatch(topic("chain.a"), b"chain.b,chain.c".to_vec(), &options(500, 5000)).await?;
    assert_eq!(outcome.status, Status::Complete);
    // Each level saw its own depth and its ancestry.
    assert_eq!(
        only_reply(&outcome)?,
        "relay-a[complete: relay-b[complete: relay-c(depth 2, ancestors 2)]]",
        "the chain a -> b -> c"
    );
    for name in ["relay-a", "relay-b", "relay-c"] {
        let stats = host.stats(name).expect("stats");
        assert_eq!(stats.declared.load(std::sync::atomic::Ordering::Relaxed), 1, "{name} ran once");
    }
    Ok(())
}

#[tokio::test]
async fn a_sub_task_into_a_cycle_is_refused_at_once() -> anyhow::Result<()> {
    let dir = relays()?;
    let host = start_host(&dir, RuntimeConfig::default()).await?;
    let started = Instant::now();
    let outcome = host
        .dispatcher()
        .dispatch(topic("chain.a"), b"chain.b,chain.c,chain.a".to_vec(), &options(500, 10_000))
        .await?;
    assert_eq!(outcome.status, Status::Complete);
    let reply = only_reply(&outcome)?;
    assert!(
        reply.starts_with("relay-a[complete: relay-b[complete: relay-c refused: ")
            && reply.contains(r#"Cycle(["chain.a", "chain.b", "chain.c", "chain.a"])"#),
        "relay-c must be refused the hop back to chain.a, naming the chain: {reply}"
    );
    assert!(started.elapsed() < Duration::from_secs(2), "refused at once, not at a deadline: {:?}", started.elapsed());
    // The task's own topic counts too.
    let outcome = host.dispatcher().dispatch(topic("chain.a"), b"chain.a".to_vec(), &options(500, 10_000)).await?;
    let reply = only_reply(&outcome)?;
    assert!(reply.contains(r#"Cycle(["chain.a", "chain.a"])"#), "{reply}");
    Ok(())
}

#[tokio::test]
async fn the_depth_limit_refuses_deeper_sub_tasks() -> anyhow::Result<()> {
    let dir = relays()?;
    let nesting = NestingConfig { max_depth: 1, ..NestingConfig::default() };
    let host = start_host_with(&dir, RuntimeConfig::default(), nesting).await?;
    let outcome =
        host.dispatcher().dispatch(topic("chain.a"), b"chain.b,chain.c".to_vec(), &options(500, 10_000)).await?;
    assert_eq!(
        only_reply(&outcome)?,
        "relay-a[complete: relay-b refused: Error::TooDeep(1)]",
        "depth 1 is allowed, depth 2 is not"
    );
    // At the default limit of 8 the same chain is fine; a limit of 0 allows
    // no sub-task at all.
    let nesting = NestingConfig { max_depth: 0, ..NestingConfig::default() };
    let host = start_host_with(&dir, RuntimeConfig::default(), nesting).await?;
    let outcome = host.dispatcher().dispatch(topic("chain.a"), b"chain.b".to_vec(), &options(500, 10_000)).await?;
    assert_eq!(only_reply(&outcome)?, "relay-a refused: Error::TooDeep(0)");
    Ok(())
}

#[tokio::test]
async fn the_default_limit_allows_eight_levels_and_refuses_the_ninth() -> anyhow::Result<()> {
    let relays = [
        guests::RELAY_A,
        guests::RELAY_B,
        guests::RELAY_C,
        guests::RELAY_D,
        guests::RELAY_E,
        guests::RELAY_F,
        guests::RELAY_G,
        guests::RELAY_H,
        guests::RELAY_I,
    ];
    let dir = PluginDir::with(&relays)?;
    let host = start_host(&dir, RuntimeConfig::default()).await?;
    let hops = "chain.b,chain.c,chain.d,chain.e,chain.f,chain.g,chain.h,chain.i";
    let outcome = host.dispatcher().dispatch(topic("chain.a"), hops.as_bytes().to_vec(), &options(500, 10_000)).await?;
    let inner = "relay-i(depth 8, ancestors 8)";
    let expected = "abcdefgh".chars().rev().fold(inner.to_owned(), |acc, c| format!("relay-{c}[complete: {acc}]"));
    assert_eq!(only_reply(&outcome)?, expected);
    let deeper = format!("{hops},other.topic");
    let outcome = host.dispatcher().dispatch(topic("chain.a"), deeper.into_bytes(), &options(500, 10_000)).await?;
    let inner = "relay-i refused: Error::TooDeep(8)";
    let expected = "abcdefgh".chars().rev().fold(inner.to_owned(), |acc, c| format!("relay-{c}[complete: {acc}]"));
    assert_eq!(only_reply(&outcome)?, expected);
    Ok(())
}

#[tokio::test]
async fn a_sub_task_gets_the_parents_deadline_minus_the_margin() -> anyhow::Result<()> {
    let dir = relays()?;
    // A margin of 200 ms rather than the default 50: the parent's reply
    // after its sub-task timed out must fit in the margin, and in a debug
    // build with the other tests running beside it, 50 ms was once not
    // enough (the parent then times out too, which is what the margin is
    // for, but not what this test is about).
    let nesting = NestingConfig { margin: Duration::from_millis(200), ..NestingConfig::default() };
    let host = start_host_with(&dir, RuntimeConfig::default(), nesting).await?;
    // relay-b would sleep 3 s; the parent's whole dispatch has 1000 ms.
    let started = Instant::now();
    let outcome =
        host.dispatcher().dispatch(topic("chain.a"), b"chain.b,sleep=3000".to_vec(), &options(500, 1000)).await?;
    let elapsed = started.elapsed();
    assert_eq!(outcome.status, Status::Complete, "the parent had time to reply: {outcome:?}");
    assert_eq!(only_reply(&outcome)?, "relay-a[timed_out:  missing test/relay-b@1.0.0]");
    assert!(elapsed < Duration::from_millis(1000), "the child ended before the parent's deadline: {elapsed:?}");
    assert!(elapsed >= Duration::from_millis(750), "the child had the parent's time minus 200 ms: {elapsed:?}");
    // The child's instance is stopped soon after its deadline, not after
    // its 3 s of work; its late result is discarded.
    let stopped = async || Ok(!host.plugin_versions().iter().any(|v| v.name == "relay-b" && v.in_flight > 0));
    wait_until("relay-b is no longer running", Duration::from_secs(1), stopped).await
}

#[tokio::test]
async fn a_sub_task_cannot_outlive_the_parents_instance() -> anyhow::Result<()> {
    let dir = relays()?;
    // The parent's calls are stopped after 600 ms, long before the
    // dispatch's 10 s deadline: its sub-task gets 550 ms.
    let runtime = RuntimeConfig { call_timeout: Duration::from_millis(600), ..RuntimeConfig::default() };
    let host = start_host(&dir, runtime).await?;
    let started = Instant::now();
    let outcome =
        host.dispatcher().dispatch(topic("chain.a"), b"chain.b,sleep=3000".to_vec(), &options(500, 10_000)).await?;
    assert_eq!(only_reply(&outcome)?, "relay-a[timed_out:  missing test/relay-b@1.0.0]");
    assert!(started.elapsed() < Duration::from_millis(1500), "took {:?}", started.elapsed());
    Ok(())
}

#[tokio::test]
async fn too_little_time_and_bad_topics_are_refused() -> anyhow::Result<()> {
    let dir = relays()?;
    let nesting = NestingConfig { margin: Duration::from_secs(5), ..NestingConfig::default() };
    let host = start_host_with(&dir, RuntimeConfig::default(), nesting).await?;
    let outcome = host.dispatcher().dispatch(topic("chain.a"), b"chain.b".to_vec(), &options(500, 2000)).await?;
    assert_eq!(only_reply(&outcome)?, "relay-a refused: Error::NoTimeLeft");

    let host = start_host(&dir, RuntimeConfig::default()).await?;
    let outcome = host.dispatcher().dispatch(topic("chain.a"), b"chain..b".to_vec(), &options(500, 2000)).await?;
    let reply = only_reply(&outcome)?;
    assert!(reply.starts_with("relay-a refused: Error::Invalid(") && reply.contains("empty token"), "{reply}");
    Ok(())
}

#[tokio::test]
async fn only_handle_may_dispatch_or_stage() -> anyhow::Result<()> {
    let dir = PluginDir::with(&[guests::MISBEHAVE, guests::ECHO])?;
    let host = start_host(&dir, RuntimeConfig::default()).await?;
    let outcome =
        host.dispatcher().dispatch(topic("misbehave.dispatch-in-interested"), Vec::new(), &options(500, 5000)).await?;
    // It is interested only if its dispatch and its write were refused;
    // echo never saw a task.
    assert_eq!(only_reply(&outcome)?, "refused");
    assert_eq!(host.stats("echo").expect("stats").received.load(std::sync::atomic::Ordering::Relaxed), 0);
    Ok(())
}

#[tokio::test]
async fn a_plugin_built_against_the_0_1_contract_still_runs() -> anyhow::Result<()> {
    let dir = PluginDir::with(&[guests::LEGACY, guests::ECHO])?;
    let host = start_host(&dir, RuntimeConfig::default()).await?;
    assert_eq!(host.plugins().loaded.len(), 2, "failures: {:?}", host.plugins().failed);
    let outcome = host.dispatcher().dispatch(topic("echo.old"), b"hi".to_vec(), &options(500, 5000)).await?;
    assert_eq!(outcome.status, Status::Complete);
    let replies: Vec<(String, Vec<u8>)> =
        outcome.partials.iter().map(|p| (p.worker.plugin.clone(), p.result.clone().unwrap_or_default())).collect();
    assert_eq!(replies, [("echo".to_owned(), b"hi".to_vec()), ("legacy".to_owned(), b"legacy:hi".to_vec())]);
    Ok(())
}
