//! Tentative side effects in embedded mode: writes staged by workers are
//! committed or aborted after the outcome, exactly once, or expire. The
//! stagers (`stager`, `stager-b` on `stage.>`) follow the commands in their
//! payload (see `anocast_test_guests::stage`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anocast::Decision;
use anocast::settle::{SettleConfig, SettlePolicy};
use anocast::{DispatchOptions, Host, HostConfig, Outcome, RuntimeConfig, Status, Topic};
use anocast_tests::{PluginDir, guests, wait_until};
use anyhow::Context;

fn topic(t: &str) -> Topic {
    Topic::parse(t).expect("valid topic")
}

async fn host(dir: &PluginDir, expiry: Duration) -> anyhow::Result<Host> {
    Host::start(HostConfig {
        plugins: Some(dir.path().to_owned()),
        node_id: "test".into(),
        runtime: RuntimeConfig::default(),
        settle: SettleConfig { expiry, ..SettleConfig::default() },
        ..HostConfig::default()
    })
    .await
}

fn options(settle: SettlePolicy) -> DispatchOptions {
    DispatchOptions { grace: Duration::from_millis(500), timeout: Duration::from_secs(5), settle, ..Default::default() }
}

async fn write(host: &Host, commands: &str, settle: SettlePolicy) -> anyhow::Result<Outcome> {
    Ok(host.dispatcher().dispatch(topic("stage.write"), commands.as_bytes().to_vec(), &options(settle)).await?)
}

/// The committed value of `plugin`'s `key`, as the host's store has it.
async fn value(host: &Host, plugin: &str, key: &str) -> anyhow::Result<Option<String>> {
    let value = host.staging().store().get(plugin, key).await?;
    Ok(value.map(|v| String::from_utf8_lossy(&v).into_owned()))
}

/// The committed value of `key` as the `stager` plugin reads it.
async fn read_by_plugin(host: &Host, key: &str) -> anyhow::Result<String> {
    let outcome =
        host.dispatcher().dispatch(topic("stage.read"), key.as_bytes().to_vec(), &options(SettlePolicy::Abort)).await?;
    let partial = outcome.partials.iter().find(|p| p.worker.plugin == "stager").expect("stager answered");
    Ok(String::from_utf8_lossy(partial.result.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?).into_owned())
}

/// Waits until `counter` reaches `at_least` (decisions are applied in the
/// background, right after the outcome).
async fn reaches(counter: &AtomicU64, at_least: u64) -> anyhow::Result<()> {
    wait_until(&format!("the counter reaches {at_least}"), Duration::from_secs(5), async || {
        Ok(counter.load(Ordering::Relaxed) >= at_least)
    })
    .await
    .with_context(|| format!("stuck at {} (< {at_least})", counter.load(Ordering::Relaxed)))
}

#[tokio::test]
async fn writes_are_committed_when_every_worker_succeeds() -> anyhow::Result<()> {
    let dir = PluginDir::with(&[guests::STAGER, guests::STAGER_B])?;
    let host = host(&dir, Duration::from_secs(30)).await?;
    let outcome = write(&host, "color=blue;size=9;stager-b:owner=ann", SettlePolicy::AllOk).await?;
    assert_eq!(outcome.status, Status::Complete);
    assert_eq!((outcome.staged, outcome.settle), (true, Some(Decision::Commit)));
    let stats = host.staging().stats();
    reaches(&stats.committed, 2).await?;
    assert_eq!(value(&host, "stager", "color").await?.as_deref(), Some("blue"));
    assert_eq!(value(&host, "stager", "size").await?.as_deref(), Some("9"));
    assert_eq!(value(&host, "stager-b", "owner").await?.as_deref(), Some("ann"));
    // Each plugin has its own namespace.
    assert_eq!(value(&host, "stager", "owner").await?, None);
    // Plugins read committed values.
    assert_eq!(read_by_plugin(&host, "color").await?, "blue");
    reaches(&stats.hooks, 2).await?;
    assert_eq!(stats.hooks_failed.load(Ordering::Relaxed), 0);
    // Reading stages nothing: the decision is taken, nothing is published.
    let outcome =
        host.dispatcher().dispatch(topic("stage.read"), b"size".to_vec(), &options(SettlePolicy::AllOk)).await?;
    assert_eq!((outcome.staged, outcome.settle), (false, Some(Decision::Commit)));
    // A later removal, committed, removes.
    write(&host, "-color", SettlePolicy::AllOk).await?;
    reaches(&stats.committed, 4).await?;
    assert_eq!(read_by_plugin(&host, "color").await?, "none");
    Ok(())
}

#[tokio::test]
async fn writes_are_dropped_when_one_worker_fails() -> anyhow::Result<()> {
    let dir = PluginDir::with(&[guests::STAGER, guests::STAGER_B])?;
    let host = host(&dir, Duration::from_secs(30)).await?;
    let outcome = write(&host, "color=red;stager-b:fail", SettlePolicy::AllOk).await?;
    assert_eq!(outcome.status, Status::Complete);
    assert_eq!(outcome.settle, Some(Decision::Abort));
    let stats = host.staging().stats();
    reaches(&stats.aborted, 2).await?;
    reaches(&stats.hooks, 2).await?;
    assert_eq!(value(&host, "stager", "color").await?, None, "the succeeding worker's write was dropped too");
    assert_eq!(stats.committed.load(Ordering::Relaxed), 0);
    // The policy is per dispatch: `commit` applies even so.
    let outcome = write(&host, "color=red;stager-b:fail", SettlePolicy::Commit).await?;
    assert_eq!(outcome.settle, Some(Decision::Commit));
    reaches(&stats.committed, 2).await?;
    assert_eq!(value(&host, "stager", "color").await?.as_deref(), Some("red"));
    Ok(())
}

#[tokio::test]
async fn a_duplicate_commit_is_applied_once() -> anyhow::Result<()> {
    let dir = PluginDir::with(&[guests::STAGER])?;
    let host = host(&dir, Duration::from_secs(30)).await?;
    let first = write(&host, "n=1", SettlePolicy::Manual).await?;
    assert_eq!(first.settle, None, "manual: nothing decided yet");
    let second = write(&host, "n=2", SettlePolicy::Manual).await?;
    let stats = host.staging().stats();
    host.dispatcher().settle(&first.request_id, Decision::Commit).await;
    reaches(&stats.committed, 1).await?;
    host.dispatcher().settle(&second.request_id, Decision::Commit).await;
    reaches(&stats.committed, 2).await?;
    assert_eq!(value(&host, "stager", "n").await?.as_deref(), Some("2"));
    // The first commit again: were it applied, n would go back to 1.
    host.dispatcher().settle(&first.request_id, Decision::Commit).await;
    reaches(&stats.duplicates, 1).await?;
    assert_eq!(value(&host, "stager", "n").await?.as_deref(), Some("2"));
    assert_eq!(stats.committed.load(Ordering::Relaxed), 2);
    assert_eq!(stats.hooks.load(Ordering::Relaxed), 2, "one settle() call per task");
    Ok(())
}

#[tokio::test]
async fn unsettled_writes_expire_and_a_late_commit_is_reported_not_applied() -> anyhow::Result<()> {
    let dir = PluginDir::with(&[guests::STAGER])?;
    // Writes wait 200 ms past their task's deadline (5 s) for a decision.
    let host = host(&dir, Duration::from_millis(200)).await?;
    let started = Instant::now();
    let lost = write(&host, "k=v", SettlePolicy::Manual).await?;
    assert_eq!(lost.status, Status::Complete);
    let stats = host.staging().stats();
    reaches(&stats.staged, 1).await?;
    // The commit is lost: nothing is applied, and the writes expire.
    let expired = async || Ok(stats.expired.load(Ordering::Relaxed) >= 1);
    wait_until("the writes expire", Duration::from_secs(10), expired).await?;
    assert!(
        started.elapsed() >= Duration::from_millis(5200),
        "expired before deadline + expiry: {:?}",
        started.elapsed()
    );
    reaches(&stats.hooks, 1).await?;
    assert_eq!(value(&host, "stager", "k").await?, None);
    // The commit, after expiry.
    host.dispatcher().settle(&lost.request_id, Decision::Commit).await;
    reaches(&stats.late_commits, 1).await?;
    assert_eq!(value(&host, "stager", "k").await?, None, "a late commit is not applied");
    assert_eq!(stats.committed.load(Ordering::Relaxed), 0);
    Ok(())
}

#[tokio::test]
async fn a_sub_tasks_writes_follow_the_root_dispatch() -> anyhow::Result<()> {
    let dir = PluginDir::with(&[guests::RELAY_A, guests::STAGER])?;
    let host = host(&dir, Duration::from_secs(30)).await?;
    // relay-a dispatches `stage.write` with "deep=1"; the stager stages it
    // for the root's transaction.
    let outcome = host
        .dispatcher()
        .dispatch(topic("chain.a"), b"stage.write,deep=1".to_vec(), &options(SettlePolicy::Manual))
        .await?;
    assert_eq!(outcome.status, Status::Complete);
    assert!(outcome.staged, "relay-a's partial says its sub-task staged");
    let stats = host.staging().stats();
    reaches(&stats.staged, 1).await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(stats.committed.load(Ordering::Relaxed), 0, "the sub-dispatch settled nothing itself");
    host.dispatcher().settle(&outcome.request_id, Decision::Commit).await;
    reaches(&stats.committed, 1).await?;
    assert_eq!(value(&host, "stager", "deep").await?.as_deref(), Some("1"));
    // Decided by the root's policy: committed with it.
    let outcome = host
        .dispatcher()
        .dispatch(topic("chain.a"), b"stage.write,deep=2".to_vec(), &options(SettlePolicy::AllOk))
        .await?;
    assert_eq!((outcome.staged, outcome.settle), (true, Some(Decision::Commit)));
    reaches(&stats.committed, 2).await?;
    assert_eq!(value(&host, "stager", "deep").await?.as_deref(), Some("2"));
    Ok(())
}

#[tokio::test]
async fn stage_limits_hold() -> anyhow::Result<()> {
    let dir = PluginDir::with(&[guests::STAGER])?;
    let host = host(&dir, Duration::from_secs(30)).await?;
    let too_long = format!("{}=1", "k".repeat(300));
    let outcome = write(&host, &too_long, SettlePolicy::AllOk).await?;
    let error = outcome.partials[0].result.clone().expect_err("a 300-byte key is refused");
    assert!(error.contains("a key must be 1-256 bytes"), "{error}");
    assert_eq!(outcome.settle, Some(Decision::Abort));
    Ok(())
}
