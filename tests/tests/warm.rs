//! Warm instances: only a plugin that declares itself stateless has its
//! instances reused, never after a failed call, never more than
//! `warm_instances` idle per plugin; idle ones give their slots up to other
//! plugins' tasks, and a task waiting for a slot takes an instance that
//! comes back.

use anocast::{Host, RuntimeConfig, Status, Topic};
use anocast_tests::{PluginDir, guests, options, start_host};
use serde_json::Value;

/// Dispatches `topic`; returns the status and the one partial's payload or
/// error.
async fn ask(host: &Host, topic: &str) -> anyhow::Result<(Status, Value)> {
    let outcome = host.dispatcher().dispatch(Topic::parse(topic)?, Vec::new(), &options(500, 5000)).await?;
    let json: Value = serde_json::from_str(&outcome.to_json())?;
    let partial = &json["partials"][0];
    let answer = if partial["ok"] == true { partial["payload"].clone() } else { partial["error"].clone() };
    Ok((outcome.status, answer))
}

async fn counts(host: &Host, topic: &str, n: usize) -> anyhow::Result<Vec<Value>> {
    let mut answers = Vec::new();
    for _ in 0..n {
        answers.push(ask(host, topic).await?.1);
    }
    Ok(answers)
}

#[tokio::test]
async fn only_a_plugin_declared_stateless_has_its_instance_reused_and_never_after_a_trap() -> anyhow::Result<()> {
    let dir = PluginDir::with(&[guests::WARM, guests::COLD])?;
    let host = start_host(&dir, RuntimeConfig::default()).await?;
    let stateless: Vec<(String, bool)> =
        host.plugins().loaded.iter().map(|p| (p.plugin.info.name.clone(), p.plugin.stateless)).collect();
    assert_eq!(stateless, [("cold".to_string(), false), ("warm".to_string(), true)]);

    assert_eq!(counts(&host, "cold.count", 3).await?, [1, 1, 1], "a fresh instance every time");
    assert_eq!(counts(&host, "warm.count", 3).await?, [1, 2, 3], "one warm instance served all three");
    let (status, error) = ask(&host, "warm.trap").await?;
    assert_eq!(status, Status::Complete);
    assert!(error.as_str().is_some_and(|e| e.contains("trapping after 4 tasks")), "{error}");
    assert_eq!(counts(&host, "warm.count", 2).await?, [1, 2], "the trapped instance was dropped");
    Ok(())
}

#[tokio::test]
async fn idle_warm_instances_are_bounded_and_give_their_slots_up_to_other_plugins() -> anyhow::Result<()> {
    let dir = PluginDir::with(&[guests::WARM, guests::COLD])?;
    let runtime = RuntimeConfig { max_instances: 3, warm_instances: 2, ..RuntimeConfig::default() };
    let host = start_host(&dir, runtime).await?;
    let warm = host.plugins().get("warm").map(|p| p.plugin.clone()).expect("warm is loaded");

    // Three at once: each needs an instance of its own; two stay warm.
    let tasks: Vec<_> = (0..3).map(|_| ask(&host, "warm.slow")).collect();
    for result in futures::future::join_all(tasks).await {
        assert_eq!(result?.0, Status::Complete);
    }
    assert_eq!(warm.warm_idle(), 2);

    // With two of three slots held by idle warm instances, three tasks of
    // another plugin at once all run side by side: the idle instances give
    // their slots up rather than make them wait.
    let tasks: Vec<_> = (0..3).map(|_| ask(&host, "cold.slow")).collect();
    for result in futures::future::join_all(tasks).await {
        assert_eq!(result?, (Status::Complete, Value::from(1)));
    }
    assert_eq!(warm.warm_idle(), 0, "both idle warm instances gave their slots up");
    Ok(())
}

#[tokio::test]
async fn a_task_waiting_for_a_slot_takes_the_instance_that_goes_back_to_the_pool() -> anyhow::Result<()> {
    let dir = PluginDir::with(&[guests::WARM])?;
    // Every slot can be held by a warm instance: the third task must not
    // wait for a slot that is never released.
    let runtime = RuntimeConfig { max_instances: 2, warm_instances: 2, ..RuntimeConfig::default() };
    let host = start_host(&dir, runtime).await?;
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..3).map(|_| ask(&host, "warm.slow")).collect();
    let mut answers = Vec::new();
    for result in futures::future::join_all(tasks).await {
        let (status, answer) = result?;
        assert_eq!(status, Status::Complete);
        answers.push(answer.as_u64().ok_or_else(|| anyhow::anyhow!("not a count: {answer}"))?);
    }
    answers.sort_unstable();
    assert_eq!(answers, [1, 1, 2], "two instances, one of which served the third task");
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "took {:?}", started.elapsed());
    Ok(())
}
