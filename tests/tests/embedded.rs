//! Dispatcher semantics in embedded mode, against real components.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anocast::{RuntimeConfig, Status, Topic};
use anocast_tests::{PluginDir, guests, options, start_host, wait_until};
use anyhow::{Context, bail};
use serde_json::{Value, json};

fn topic(t: &str) -> Topic {
    Topic::parse(t).expect("valid topic")
}

/// The outcome as the JSON users see.
fn json_of(outcome: &anocast::Outcome) -> Value {
    serde_json::from_str(&outcome.to_json()).expect("outcome JSON")
}

#[tokio::test]
async fn fan_out_joins_the_partials_of_every_interested_plugin() -> anyhow::Result<()> {
    let dir = PluginDir::with(&[guests::WORD_COUNT, guests::SENTIMENT, guests::FRAUD_CHECK, guests::INVENTORY])?;
    let host = start_host(&dir, RuntimeConfig::default()).await?;
    assert_eq!(host.plugins().loaded.len(), 4, "failures: {:?}", host.plugins().failed);

    let outcome = host
        .dispatcher()
        .dispatch(topic("text.analyze"), b"what a great day, I love it".to_vec(), &options(500, 5000))
        .await?;
    let json = json_of(&outcome);
    assert_eq!(json["status"], "complete");
    assert_eq!(json["topic"], "text.analyze");
    assert_eq!(json["missing"], json!([]));
    assert_eq!(
        json["partials"],
        json!([
            {"worker": "test/sentiment@0.1.0", "ok": true, "payload": {"score": 2, "label": "positive"}, "error": null},
            {"worker": "test/word-count@0.1.0", "ok": true, "payload": {"words": 7, "lines": 1, "chars": 27}, "error": null},
        ])
    );
    assert!(json["request_id"].as_str().is_some_and(|id| id.len() >= 16));
    Ok(())
}

#[tokio::test]
async fn interest_depends_on_the_payload() -> anyhow::Result<()> {
    let dir = PluginDir::with(&[guests::FRAUD_CHECK, guests::INVENTORY])?;
    let host = start_host(&dir, RuntimeConfig::default()).await?;
    let workers =
        |outcome: &anocast::Outcome| outcome.partials.iter().map(|p| p.worker.plugin.clone()).collect::<Vec<_>>();

    let small = br#"{"amount": 20, "country": "NL", "items": [{"sku": "book"}]}"#.to_vec();
    let outcome = host.dispatcher().dispatch(topic("orders.created"), small, &options(500, 5000)).await?;
    assert_eq!(outcome.status, Status::Complete);
    assert_eq!(workers(&outcome), ["inventory"], "fraud-check must not take part under the threshold");

    let big = br#"{"amount": 25000, "items": [{"sku": "car", "qty": 2}]}"#.to_vec();
    let outcome = host.dispatcher().dispatch(topic("orders.created"), big, &options(500, 5000)).await?;
    assert_eq!(outcome.status, Status::Complete);
    assert_eq!(workers(&outcome), ["fraud-check", "inventory"]);
    let json = json_of(&outcome);
    assert_eq!(json["partials"][0]["payload"]["risk"], "high");
    assert_eq!(json["partials"][1]["payload"], json!({"reserved": ["car"], "units": 2}));
    Ok(())
}

#[tokio::test]
async fn no_interest_is_answered_well_before_the_grace_period() -> anyhow::Result<()> {
    let dir = PluginDir::with(&[guests::FRAUD_CHECK, guests::MISBEHAVE])?;
    let host = start_host(&dir, RuntimeConfig::default()).await?;
    // fraud-check subscribes but declines small orders.
    let started = Instant::now();
    let outcome = host
        .dispatcher()
        .dispatch(topic("orders.created"), br#"{"amount": 5}"#.to_vec(), &options(2000, 30_000))
        .await?;
    assert_eq!(outcome.status, Status::NoInterest);
    assert!(outcome.partials.is_empty() && outcome.missing.is_empty());
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "took {:?}: every receiver had answered",
        started.elapsed()
    );

    // Nobody subscribes at all.
    let started = Instant::now();
    let outcome = host.dispatcher().dispatch(topic("nobody.listens"), Vec::new(), &options(2000, 30_000)).await?;
    assert_eq!(outcome.status, Status::NoInterest);
    assert!(started.elapsed() < Duration::from_millis(1000));

    // A declining receiver.
    let outcome =
        host.dispatcher().dispatch(topic("misbehave.not-interested"), Vec::new(), &options(2000, 30_000)).await?;
    assert_eq!(outcome.status, Status::NoInterest);
    Ok(())
}

#[tokio::test]
async fn the_deadline_names_the_missing_worker() -> anyhow::Result<()> {
    let dir = PluginDir::with(&[guests::MISBEHAVE, guests::ECHO])?;
    let host = start_host(&dir, RuntimeConfig::default()).await?;
    let started = Instant::now();
    let outcome = host.dispatcher().dispatch(topic("misbehave.sleep"), b"3000".to_vec(), &options(500, 400)).await?;
    let elapsed = started.elapsed();
    assert_eq!(outcome.status, Status::TimedOut);
    assert_eq!(outcome.missing, ["test/misbehave@0.1.0"]);
    assert!(outcome.partials.is_empty());
    assert!(elapsed >= Duration::from_millis(400) && elapsed < Duration::from_millis(2000), "took {elapsed:?}");
    // The node keeps serving.
    let outcome = host.dispatcher().dispatch(topic("echo"), b"still here".to_vec(), &options(500, 5000)).await?;
    assert_eq!(outcome.status, Status::Complete);
    Ok(())
}

/// Dispatches `misbehave.<what>` and returns the worker's error.
async fn error_of(host: &anocast::Host, what: &str) -> anyhow::Result<String> {
    let outcome =
        host.dispatcher().dispatch(topic(&format!("misbehave.{what}")), Vec::new(), &options(500, 20_000)).await?;
    assert_eq!(outcome.status, Status::Complete, "{what}: {}", outcome.to_json());
    let [partial] = &outcome.partials[..] else { bail!("{what}: expected one partial: {}", outcome.to_json()) };
    match &partial.result {
        Err(error) => Ok(error.clone()),
        Ok(_) => bail!("{what}: expected an error partial"),
    }
}

async fn still_serves(host: &anocast::Host) -> anyhow::Result<()> {
    let outcome = host.dispatcher().dispatch(topic("misbehave.ok"), Vec::new(), &options(500, 5000)).await?;
    let [partial] = &outcome.partials[..] else { bail!("expected one partial: {}", outcome.to_json()) };
    assert_eq!(partial.result.as_deref().ok(), Some(&b"fine"[..]));
    Ok(())
}

#[tokio::test]
async fn an_infinite_loop_is_stopped_and_the_node_keeps_serving() -> anyhow::Result<()> {
    let dir = PluginDir::with(&[guests::MISBEHAVE])?;
    let runtime = RuntimeConfig { call_timeout: Duration::from_millis(300), ..RuntimeConfig::default() };
    let host = start_host(&dir, runtime).await?;
    let started = Instant::now();
    let (spin, ok) = tokio::join!(error_of(&host, "spin"), async {
        // While one guest spins (it declared, so its `handle` runs), others
        // are served on the same executor.
        let spinning = async || Ok(host.stats("misbehave").is_some_and(|s| s.declared.load(Ordering::Relaxed) >= 1));
        wait_until("the spinning guest declared", Duration::from_secs(3), spinning).await?;
        let t = Instant::now();
        still_serves(&host).await.map(|()| t.elapsed())
    });
    let spin = spin?;
    assert!(spin.contains("time limit of 300ms"), "{spin}");
    assert!(started.elapsed() < Duration::from_secs(3), "the loop was not stopped in time");
    assert!(ok? < Duration::from_millis(250), "a spinning guest starved the executor");
    still_serves(&host).await
}

#[tokio::test]
async fn the_deadline_limit_is_obeyed_by_a_guest_that_finishes_in_time() -> anyhow::Result<()> {
    let dir = PluginDir::with(&[guests::MISBEHAVE])?;
    let runtime = RuntimeConfig { call_timeout: Duration::from_millis(2000), ..RuntimeConfig::default() };
    let host = start_host(&dir, runtime).await?;
    let outcome = host.dispatcher().dispatch(topic("misbehave.sleep"), b"100".to_vec(), &options(500, 5000)).await?;
    assert_eq!(outcome.partials[0].result.as_deref().ok(), Some(&b"slept 100 ms"[..]));
    Ok(())
}

#[tokio::test]
async fn growing_memory_past_the_limit_is_an_error_partial() -> anyhow::Result<()> {
    let dir = PluginDir::with(&[guests::MISBEHAVE])?;
    let runtime = RuntimeConfig { memory_limit: 16 << 20, ..RuntimeConfig::default() };
    let host = start_host(&dir, runtime).await?;
    let error = error_of(&host, "grow").await?;
    assert!(error.contains("memory limit of 16 MiB"), "{error}");
    still_serves(&host).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_the_node_memory_budget() -> anyhow::Result<()> {
    let dir = PluginDir::with(&[guests::MISBEHAVE])?;
    let runtime = RuntimeConfig { memory_limit: 48 << 20, memory_budget: 64 << 20, ..RuntimeConfig::default() };
    let host = std::sync::Arc::new(start_host(&dir, runtime).await?);
    let budget = || host.runtime().memory_budget();
    // One task holds 40 MiB for a second...
    let holder = {
        let host = host.clone();
        tokio::spawn(async move {
            host.dispatcher().dispatch(topic("misbehave.hold"), b"40,1000".to_vec(), &options(500, 5000)).await
        })
    };
    let holding = async || Ok(budget().used() >= 40 << 20);
    wait_until("the first task holds its memory", Duration::from_secs(5), holding).await?;
    // ...so another one, within its own limit of 48 MiB, finds no room.
    let second = host.dispatcher().dispatch(topic("misbehave.hold"), b"40,10".to_vec(), &options(500, 5000)).await?;
    let error = second.partials[0].result.clone().err().context("the second task fails")?;
    assert!(error.contains("instance memory budget of 64 MiB is spent"), "{error}");
    assert_eq!(budget().refused(), 1);
    let first = holder.await??;
    assert_eq!(first.partials[0].result.as_deref().ok(), Some(&b"held 40 MiB"[..]), "{}", first.to_json());
    // Both instances gave their memory back.
    assert!(budget().used() < 1 << 20, "{} bytes still held", budget().used());
    let outcome = host.dispatcher().dispatch(topic("misbehave.hold"), b"40,10".to_vec(), &options(500, 5000)).await?;
    assert_eq!(outcome.partials[0].result.as_deref().ok(), Some(&b"held 40 MiB"[..]), "{}", outcome.to_json());
    // A budget below one instance's limit is refused at start.
    let small = RuntimeConfig { memory_limit: 48 << 20, memory_budget: 32 << 20, ..RuntimeConfig::default() };
    let err = start_host(&dir, small).await.err().context("a budget below the limit")?;
    assert!(err.to_string().contains("must be at least one instance's memory limit"), "{err}");
    Ok(())
}

#[tokio::test]
async fn memory_within_the_limit_is_obeyed() -> anyhow::Result<()> {
    // The same guests run fine under a limit that leaves them room.
    let dir = PluginDir::with(&[guests::MISBEHAVE])?;
    let runtime = RuntimeConfig { memory_limit: 16 << 20, ..RuntimeConfig::default() };
    let host = start_host(&dir, runtime).await?;
    let payload = vec![b'x'; 4 << 20];
    let outcome = host.dispatcher().dispatch(topic("misbehave.echo"), payload.clone(), &options(500, 5000)).await?;
    assert_eq!(outcome.partials[0].result.as_deref().ok(), Some(&payload[..]));
    Ok(())
}

#[tokio::test]
async fn a_trap_is_an_error_partial_and_the_next_task_works() -> anyhow::Result<()> {
    let dir = PluginDir::with(&[guests::MISBEHAVE])?;
    let host = start_host(&dir, RuntimeConfig::default()).await?;
    let error = error_of(&host, "trap").await?;
    assert!(error.contains("trapped"), "{error}");
    assert!(error.contains("boom on purpose"), "the guest's panic message should be quoted: {error}");
    still_serves(&host).await?;

    let error = error_of(&host, "recurse").await?;
    assert!(error.contains("call stack exhausted"), "{error}");
    still_serves(&host).await?;

    let error = error_of(&host, "interested-trap").await?;
    assert!(error.starts_with("interested() trapped") && error.contains("cannot make up my mind"), "{error}");

    let error = error_of(&host, "fail").await?;
    assert_eq!(error, "failed on purpose");
    still_serves(&host).await
}

#[tokio::test]
async fn payloads_that_are_not_json_become_strings() -> anyhow::Result<()> {
    let dir = PluginDir::with(&[guests::MISBEHAVE])?;
    let host = start_host(&dir, RuntimeConfig::default()).await?;
    let outcome = host.dispatcher().dispatch(topic("misbehave.binary"), Vec::new(), &options(500, 5000)).await?;
    let json = json_of(&outcome);
    assert_eq!(json["partials"][0]["payload"], "\u{fffd}\u{fffd}\u{0}");
    let outcome = host.dispatcher().dispatch(topic("misbehave.log"), Vec::new(), &options(500, 5000)).await?;
    assert_eq!(json_of(&outcome)["partials"][0]["payload"], "logged");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_dispatches_all_complete() -> anyhow::Result<()> {
    let dir = PluginDir::with(&[guests::WORD_COUNT, guests::SENTIMENT, guests::ECHO])?;
    let host = start_host(&dir, RuntimeConfig::default()).await?;
    let dispatcher = host.dispatcher().clone();
    let mut tasks = Vec::new();
    for i in 0..1000u32 {
        let dispatcher = dispatcher.clone();
        tasks.push(tokio::spawn(async move {
            let text = format!("word {}", "good ".repeat(i as usize % 7));
            let outcome =
                dispatcher.dispatch(topic("text.analyze"), text.clone().into_bytes(), &options(5000, 60_000)).await?;
            anyhow::Ok((i, text, outcome))
        }));
    }
    let mut request_ids = std::collections::HashSet::new();
    for task in tasks {
        let (i, text, outcome) = task.await.context("dispatch task panicked")??;
        assert_eq!(outcome.status, Status::Complete, "dispatch {i}: {}", outcome.to_json());
        let json = json_of(&outcome);
        let good = i as i64 % 7;
        assert_eq!(
            json["partials"],
            json!([
                {"worker": "test/sentiment@0.1.0", "ok": true,
                 "payload": {"score": good, "label": if good > 0 { "positive" } else { "neutral" }}, "error": null},
                {"worker": "test/word-count@0.1.0", "ok": true,
                 "payload": {"words": 1 + good, "lines": 1, "chars": text.chars().count()}, "error": null},
            ]),
            "dispatch {i}"
        );
        assert!(request_ids.insert(outcome.request_id), "request ids must be unique");
    }
    Ok(())
}

#[tokio::test]
async fn a_fast_reply_never_closes_a_dispatch_a_slower_worker_is_about_to_join() -> anyhow::Result<()> {
    // echo answers at once; misbehave takes 200 ms to decide it is interested.
    let dir = PluginDir::with(&[guests::ECHO, guests::MISBEHAVE])?;
    let host = start_host(&dir, RuntimeConfig::default()).await?;
    for _ in 0..5 {
        let outcome = host.dispatcher().dispatch(topic("race.go"), b"fast".to_vec(), &options(1000, 5000)).await?;
        assert_eq!(outcome.status, Status::Complete);
        let replies: Vec<_> = outcome.partials.iter().map(|p| p.result.clone()).collect();
        assert_eq!(replies, [Ok(b"fast".to_vec()), Ok(b"slow".to_vec())], "{}", outcome.to_json());
    }
    // With a grace period shorter than its decision, the slow worker is
    // refused atomically and does not run; the outcome does not wait for it.
    let started = Instant::now();
    let outcome = host.dispatcher().dispatch(topic("race.go"), b"fast".to_vec(), &options(50, 5000)).await?;
    assert_eq!(outcome.status, Status::Complete);
    assert_eq!(outcome.partials.len(), 1, "{}", outcome.to_json());
    assert_eq!(outcome.partials[0].worker.plugin, "echo");
    assert!(started.elapsed() < Duration::from_millis(190), "the outcome waited for a refused worker");
    Ok(())
}

#[tokio::test]
async fn plugins_see_no_environment_files_or_network() -> anyhow::Result<()> {
    let dir = PluginDir::with(&[guests::MISBEHAVE])?;
    let host = start_host(&dir, RuntimeConfig::default()).await?;
    let outcome = host.dispatcher().dispatch(topic("misbehave.sandbox"), Vec::new(), &options(500, 5000)).await?;
    let json = json_of(&outcome);
    let seen = &json["partials"][0]["payload"];
    assert_eq!(seen["env"], 0, "{seen}");
    assert_eq!(seen["args"], 0, "{seen}");
    assert!(seen["fs"].as_str().is_some_and(|s| s.starts_with("denied")), "{seen}");
    assert!(seen["net"].as_str().is_some_and(|s| s.starts_with("denied")), "{seen}");
    Ok(())
}

#[tokio::test]
async fn guest_output_goes_to_the_host_log() -> anyhow::Result<()> {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("capture lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("anocast::guest=info")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = PluginDir::with(&[guests::MISBEHAVE])?;
    let host = start_host(&dir, RuntimeConfig::default()).await?;
    let outcome = host.dispatcher().dispatch(topic("misbehave.log"), Vec::new(), &options(500, 5000)).await?;
    assert_eq!(outcome.status, Status::Complete);
    let log = String::from_utf8(capture.0.lock().expect("capture lock").clone())?;
    for line in ["hello from the guest log", "hello from guest stdout", "hello from guest stderr"] {
        let found = log.lines().find(|l| l.contains(line)).with_context(|| format!("{line:?} not logged: {log}"))?;
        assert!(found.contains("test/misbehave@0.1.0"), "not tagged with the worker: {found}");
    }
    assert!(log.contains(&outcome.request_id), "guest log records carry the request id: {log}");
    Ok(())
}

#[tokio::test]
async fn a_short_call_after_a_long_wait_finishes_on_its_first_poll() -> anyhow::Result<()> {
    use futures::FutureExt;
    let dir = PluginDir::with(&[guests::ECHO])?;
    let host = start_host(&dir, RuntimeConfig::default()).await?;
    let echo = host.plugins().get("echo").map(|p| p.plugin.clone()).context("echo is loaded")?;
    let task = anocast::runtime::WitTask {
        topic: "echo".into(),
        request_id: "r".into(),
        payload: b"hi".to_vec(),
        content_type: "text/plain".into(),
        deadline_ms: 10_000,
        depth: 0,
        ancestry: Vec::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut instance = echo.instantiate("t/echo@1".into(), "r".into(), deadline, None).await?;
    assert!(instance.interested(&task).await?);
    // Several epoch ticks (10 ms each) pass while the worker waits, as it
    // does for the ledger; `handle` still gets a slice of its own.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let reply = instance.handle(&task).now_or_never().context("handle yielded on its first poll")??;
    assert_eq!(reply.map_err(anyhow::Error::msg)?, b"hi");
    Ok(())
}
