//! Plugins in Python, JavaScript and C next to Rust ones, all built from
//! source by the tests' build script with the tools `cargo xtask test`
//! installs: one fan-out joining the four languages, the limits (deadline,
//! memory) for each, and warm instances of stateless plugins.

use std::time::Duration;

use anocast::{Host, Outcome, RuntimeConfig, Status, Topic};
use anocast_tests::{PluginDir, guests, options, payload_of, shared_code_cache, start_host};
use serde_json::{Value, json};

/// A host on `guests` whose compiled code is cached across the test run
/// (Python and JavaScript components take seconds to compile).
async fn host_with(guests: &[&str], runtime: RuntimeConfig) -> anyhow::Result<(PluginDir, Host)> {
    let dir = PluginDir::with(guests)?;
    let runtime = RuntimeConfig { cache_dir: Some(shared_code_cache()), ..runtime };
    let host = start_host(&dir, runtime).await?;
    assert_eq!(host.plugins().loaded.len(), guests.len(), "failures: {:?}", host.plugins().failed);
    Ok((dir, host))
}

async fn send(host: &Host, topic: &str, payload: &[u8]) -> anyhow::Result<(Outcome, Value)> {
    let outcome = host.dispatcher().dispatch(Topic::parse(topic)?, payload.to_vec(), &options(2000, 20_000)).await?;
    let json: Value = serde_json::from_str(&outcome.to_json())?;
    Ok((outcome, json))
}

#[tokio::test]
async fn one_dispatch_joins_partials_from_rust_python_javascript_and_c() -> anyhow::Result<()> {
    let plugins = [guests::WORD_COUNT, guests::KEYWORDS, guests::READING_TIME, guests::BYTE_STATS];
    let (_dir, host) = host_with(&plugins, RuntimeConfig::default()).await?;
    let text = "What a great day: the new release is fast and I love the release 2";
    let (outcome, json) = send(&host, "text.analyze", text.as_bytes()).await?;
    assert_eq!(outcome.status, Status::Complete, "{json}");
    assert_eq!(outcome.partials.len(), 4, "{json}");
    assert_eq!(payload_of(&json, "word-count")["words"], 15, "Rust: {json}");
    assert_eq!(payload_of(&json, "keywords"), &json!({"keywords": ["release", "day", "fast"]}), "Python: {json}");
    assert_eq!(
        payload_of(&json, "reading-time"),
        &json!({"reading_seconds": 5, "longest_word": "release"}),
        "JavaScript: {json}"
    );
    assert_eq!(payload_of(&json, "byte-stats"), &json!({"bytes": 66, "ascii": 66, "digits": 1}), "C: {json}");

    // Each language's error reaches the outcome as an error partial.
    let (outcome, json) = send(&host, "text.analyze", b"\xff\x00 bad").await?;
    assert_eq!(outcome.status, Status::Complete, "{json}");
    assert_eq!(payload_of(&json, "keywords"), "the text is not UTF-8", "{json}");
    assert_eq!(payload_of(&json, "reading-time"), "the text is not UTF-8", "{json}");
    assert_eq!(payload_of(&json, "byte-stats"), "the text holds a NUL byte", "{json}");
    Ok(())
}

/// The limit-testing guest of each language, and its topic prefix.
const LIMIT_GUESTS: [(&str, &str); 3] =
    [(guests::PY_LIMITS, "limits.py"), (guests::JS_LIMITS, "limits.js"), (guests::C_LIMITS, "limits.c")];

#[tokio::test]
async fn the_deadline_stops_a_guest_in_every_language_and_the_next_task_runs() -> anyhow::Result<()> {
    let runtime = RuntimeConfig { call_timeout: Duration::from_secs(1), ..RuntimeConfig::default() };
    let (_dir, host) = host_with(&LIMIT_GUESTS.map(|(guest, _)| guest), runtime).await?;
    for (_, prefix) in LIMIT_GUESTS {
        let started = std::time::Instant::now();
        let (_, json) = send(&host, &format!("{prefix}.spin"), b"").await?;
        let plugin = prefix.replace("limits.", "") + "-limits";
        let error = payload_of(&json, &plugin).as_str().unwrap_or_default().to_owned();
        assert!(error.contains("exceeding its time limit of 1s"), "{prefix}: {json}");
        assert!(started.elapsed() < Duration::from_secs(5), "{prefix}: stopped in {:?}", started.elapsed());
        let (outcome, json) = send(&host, &format!("{prefix}.ok"), b"").await?;
        assert_eq!((outcome.status, payload_of(&json, &plugin)), (Status::Complete, &json!("ok")), "{json}");
    }
    Ok(())
}

#[tokio::test]
async fn the_memory_limit_holds_in_every_language_and_the_next_task_runs() -> anyhow::Result<()> {
    let (_dir, host) = host_with(&LIMIT_GUESTS.map(|(guest, _)| guest), RuntimeConfig::default()).await?;
    for (_, prefix) in LIMIT_GUESTS {
        let (_, json) = send(&host, &format!("{prefix}.grow"), b"").await?;
        let plugin = prefix.replace("limits.", "") + "-limits";
        assert_eq!(payload_of(&json, &plugin), "handle() exceeded its memory limit of 64 MiB", "{prefix}: {json}");
        let (outcome, json) = send(&host, &format!("{prefix}.ok"), b"").await?;
        assert_eq!((outcome.status, payload_of(&json, &plugin)), (Status::Complete, &json!("ok")), "{json}");
    }
    Ok(())
}

/// What `NAME-limits` answers on `count`: the tasks its instance served.
async fn count(host: &Host, prefix: &str) -> anyhow::Result<Value> {
    let (_, json) = send(host, &format!("{prefix}.count"), b"").await?;
    let plugin = prefix.replace("limits.", "") + "-limits";
    Ok(payload_of(&json, &plugin).clone())
}

#[tokio::test]
async fn stateless_plugins_in_every_language_reuse_a_warm_instance_until_it_fails() -> anyhow::Result<()> {
    let runtime = RuntimeConfig { call_timeout: Duration::from_secs(1), ..RuntimeConfig::default() };
    let (_dir, host) = host_with(&LIMIT_GUESTS.map(|(guest, _)| guest), runtime).await?;
    for (guest, prefix) in LIMIT_GUESTS {
        let loaded = host.plugins();
        let plugin = loaded.loaded.iter().find(|p| guest.ends_with(&format!("{}.wasm", p.plugin.info.name)));
        assert!(plugin.is_some_and(|p| p.plugin.stateless), "{prefix} declares itself stateless (anocast.toml)");
        // The instance that described the plugin is not reused; the first
        // task's is, and each task is served one after the other here.
        assert_eq!(count(&host, prefix).await?, json!(1), "{prefix}");
        assert_eq!(count(&host, prefix).await?, json!(2), "{prefix}: the warm instance served the second task");
        assert_eq!(count(&host, prefix).await?, json!(3), "{prefix}");
        // A deadline drops the instance: the next task starts fresh.
        send(&host, &format!("{prefix}.spin"), b"").await?;
        assert_eq!(count(&host, prefix).await?, json!(1), "{prefix}: after a stopped call, a fresh instance");
    }
    Ok(())
}

#[tokio::test]
async fn with_no_warm_instances_every_task_of_a_stateless_plugin_starts_fresh() -> anyhow::Result<()> {
    let runtime = RuntimeConfig { warm_instances: 0, ..RuntimeConfig::default() };
    let (_dir, host) = host_with(&[guests::PY_LIMITS], runtime).await?;
    for _ in 0..3 {
        assert_eq!(count(&host, "limits.py").await?, json!(1));
    }
    Ok(())
}
