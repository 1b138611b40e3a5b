//! Hot reload of the plugins folder (issue 5), in embedded mode: versions
//! swapped under load lose no dispatch, tasks under way finish on their
//! version, broken files never replace a working version, removal, rename
//! and duplicate names, and the folder watcher.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anocast::{Host, Outcome, RuntimeConfig, Status, Topic};
use anocast_tests::{PluginDir, guests, options, start_host, wait_until};
use anyhow::Context;

/// Puts `guest` at `dir/name` the way editors and build tools do: written
/// aside, then renamed into place.
fn install(dir: &PluginDir, guest: &str, name: &str) -> anyhow::Result<()> {
    let aside = dir.path().join(format!(".{name}.part"));
    std::fs::copy(guest, &aside)?;
    std::fs::rename(&aside, dir.path().join(name))?;
    Ok(())
}

async fn dispatch(host: &Host, payload: &str) -> anyhow::Result<Outcome> {
    Ok(host.dispatcher().dispatch(Topic::parse("swap")?, payload.as_bytes().to_vec(), &options(2000, 10_000)).await?)
}

/// The version that answered, checked against the worker id it came from.
fn answered_by(outcome: &Outcome) -> anyhow::Result<String> {
    anyhow::ensure!(outcome.status == Status::Complete, "{}", outcome.to_json());
    anyhow::ensure!(outcome.partials.len() == 1, "{}", outcome.to_json());
    let partial = &outcome.partials[0];
    let answer = String::from_utf8(partial.result.clone().map_err(anyhow::Error::msg)?)?;
    let worker = partial.worker.to_string();
    anyhow::ensure!(worker == format!("test/swap@{answer}"), "{worker} answered as version {answer}");
    Ok(answer)
}

/// A dispatch whose task takes `ms` milliseconds, once its task is under
/// way on the current version.
async fn under_way(host: &Arc<Host>, ms: u64) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<Outcome>>> {
    let slow = {
        let host = host.clone();
        tokio::spawn(async move { dispatch(&host, &ms.to_string()).await })
    };
    let started = async || Ok(host.plugin_versions().iter().any(|v| v.in_flight == 1));
    wait_until("the slow task started", Duration::from_secs(5), started).await?;
    Ok(slow)
}

fn swap_file(dir: &PluginDir) -> std::path::PathBuf {
    dir.path().join("swap.wasm")
}

async fn host_with_v1() -> anyhow::Result<(PluginDir, Host)> {
    let dir = PluginDir::with(&[])?;
    install(&dir, guests::SWAP_V1, "swap.wasm")?;
    let host = start_host(&dir, RuntimeConfig::default()).await?;
    anyhow::ensure!(host.plugins().loaded.len() == 1, "{:?}", host.plugins().failed);
    Ok((dir, host))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_swaps_under_continuous_load_lose_no_dispatch() -> anyhow::Result<()> {
    let (dir, host) = host_with_v1().await?;
    let host = Arc::new(host);
    let stop = Arc::new(AtomicBool::new(false));
    let mut loads = Vec::new();
    for _ in 0..4 {
        let (host, stop) = (host.clone(), stop.clone());
        loads.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                answers.push(answered_by(&dispatch(&host, "").await?)?);
            }
            anyhow::Ok(answers)
        }));
    }
    for swap in 0..50 {
        let guest = if swap % 2 == 0 { guests::SWAP_V2 } else { guests::SWAP_V1 };
        install(&dir, guest, "swap.wasm")?;
        host.reload().await?;
        let expected = if swap % 2 == 0 { "2.0.0" } else { "1.0.0" };
        assert_eq!(host.plugins().loaded[0].plugin.info.version, expected);
        // Every dispatch after the swap meets the new version.
        assert_eq!(answered_by(&dispatch(&host, "").await?)?, expected);
    }
    stop.store(true, Ordering::Relaxed);
    let mut answers = Vec::new();
    for load in loads {
        answers.extend(load.await??);
    }
    let v1 = answers.iter().filter(|a| *a == "1.0.0").count();
    let v2 = answers.iter().filter(|a| *a == "2.0.0").count();
    assert_eq!(v1 + v2, answers.len());
    assert!(v1 > 0 && v2 > 0, "both versions served the load: {v1} and {v2}");
    assert!(answers.len() >= 50, "only {} dispatches under load", answers.len());
    // Every old version is freed once its last task has ended.
    let versions = host.plugin_versions();
    assert_eq!(versions.len(), 1, "{versions:?}");
    assert!(versions[0].current && versions[0].in_flight == 0);
    assert!(host.plugins().failed.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_under_way_finishes_on_the_version_it_started_with() -> anyhow::Result<()> {
    let (dir, host) = host_with_v1().await?;
    let host = Arc::new(host);
    let slow = under_way(&host, 600).await?;
    install(&dir, guests::SWAP_V2, "swap.wasm")?;
    host.reload().await?;
    assert_eq!(answered_by(&dispatch(&host, "").await?)?, "2.0.0");
    let versions = host.plugin_versions();
    assert_eq!(versions.len(), 2, "{versions:?}");
    assert!(versions.iter().any(|v| !v.current && v.version == "1.0.0" && v.in_flight == 1), "{versions:?}");
    assert_eq!(answered_by(&slow.await??)?, "1.0.0");
    let versions = host.plugin_versions();
    assert_eq!(versions.len(), 1, "v1 is freed with its last task: {versions:?}");
    assert_eq!(versions[0].version, "2.0.0");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_never_replaces_a_working_version() -> anyhow::Result<()> {
    let (dir, host) = host_with_v1().await?;
    let file = swap_file(&dir);
    let core_module = b"\0asm\x01\0\0\0".to_vec();
    let broken: [(&str, Vec<u8>); 6] = [
        ("not wasm", b"#!/bin/sh\necho hello\n".to_vec()),
        ("a core module", core_module),
        ("half a component", std::fs::read(guests::SWAP_V2)?[..4000].to_vec()),
        ("the wrong world", std::fs::read(guests::WRONG_WORLD)?),
        ("describe answers an invalid pattern", std::fs::read(guests::BAD_DESCRIBE)?),
        ("describe traps", std::fs::read(guests::TRAP_DESCRIBE)?),
    ];
    for (what, bytes) in broken {
        std::fs::write(&file, &bytes)?;
        host.reload().await?;
        let set = host.plugins();
        assert_eq!(set.loaded.len(), 1, "{what}");
        assert_eq!(set.loaded[0].plugin.info.version, "1.0.0", "{what}");
        assert_eq!(set.failed.len(), 1, "{what}: {:?}", set.failed);
        assert_eq!(set.failed[0].file, file, "{what}");
        assert!(!set.failed[0].error.is_empty(), "{what}");
        assert_eq!(answered_by(&dispatch(&host, "").await?)?, "1.0.0", "{what}");
    }
    // Fixed: the new version loads and the error is gone.
    install(&dir, guests::SWAP_V2, "swap.wasm")?;
    host.reload().await?;
    assert!(host.plugins().failed.is_empty());
    assert_eq!(answered_by(&dispatch(&host, "").await?)?, "2.0.0");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_unloads_and_a_rename_reloads_nothing() -> anyhow::Result<()> {
    let (dir, host) = host_with_v1().await?;
    let before = host.plugins().loaded[0].plugin.clone();
    std::fs::rename(swap_file(&dir), dir.path().join("renamed.wasm"))?;
    host.reload().await?;
    let set = host.plugins();
    assert_eq!(set.loaded.len(), 1);
    assert!(Arc::ptr_eq(&set.loaded[0].plugin, &before), "a rename recompiled the plugin");
    assert_eq!(set.loaded[0].file, dir.path().join("renamed.wasm"));
    assert_eq!(answered_by(&dispatch(&host, "").await?)?, "1.0.0");

    // Removed while a task is under way: unloaded, and the task finishes.
    let host = Arc::new(host);
    let slow = under_way(&host, 500).await?;
    std::fs::remove_file(dir.path().join("renamed.wasm"))?;
    host.reload().await?;
    assert!(host.plugins().loaded.is_empty());
    assert_eq!(dispatch(&host, "").await?.status, Status::NoInterest);
    assert_eq!(answered_by(&slow.await??)?, "1.0.0");
    assert!(host.plugin_versions().is_empty(), "freed with its last task");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_files_claiming_one_name() -> anyhow::Result<()> {
    let (dir, host) = host_with_v1().await?;
    install(&dir, guests::SWAP_V2, "another.wasm")?;
    host.reload().await?;
    let set = host.plugins();
    assert_eq!(set.loaded.len(), 1);
    assert_eq!(set.loaded[0].file, swap_file(&dir), "the holder keeps the name");
    assert_eq!(set.failed.len(), 1);
    assert!(set.failed[0].error.contains("already taken"), "{}", set.failed[0].error);
    assert_eq!(answered_by(&dispatch(&host, "").await?)?, "1.0.0");
    // The holder leaves: the other file takes the name over.
    std::fs::remove_file(swap_file(&dir))?;
    host.reload().await?;
    assert!(host.plugins().failed.is_empty(), "{:?}", host.plugins().failed);
    assert_eq!(answered_by(&dispatch(&host, "").await?)?, "2.0.0");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_applies_changes_and_never_serves_a_half_written_file() -> anyhow::Result<()> {
    let (dir, host) = host_with_v1().await?;
    let host = Arc::new(host);
    let _watch = host.watch_plugins(Duration::from_millis(100))?;

    // Written slowly, in place: pauses longer than the debounce period.
    let bytes = std::fs::read(guests::SWAP_V2)?;
    {
        use std::io::Write;
        let mut file = std::fs::File::create(swap_file(&dir))?;
        for chunk in bytes.chunks(bytes.len() / 4 + 1) {
            file.write_all(chunk)?;
            file.flush()?;
            // Meanwhile, the old version (or the new one, once whole) serves.
            for _ in 0..5 {
                let answer = answered_by(&dispatch(&host, "").await?)?;
                assert!(answer == "1.0.0" || answer == "2.0.0");
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        }
    }
    wait_for_version(&host, "2.0.0").await?;

    // Dropped in under another name, then the first file removed.
    install(&dir, guests::SWAP_V1, "zz-swap.wasm")?;
    std::fs::remove_file(swap_file(&dir))?;
    wait_for_version(&host, "1.0.0").await?;
    assert_eq!(host.plugins().loaded[0].file, dir.path().join("zz-swap.wasm"));
    Ok(())
}

async fn wait_for_version(host: &Host, version: &str) -> anyhow::Result<()> {
    let serves = async || Ok(answered_by(&dispatch(host, "").await?)? == version);
    wait_until(&format!("version {version} serves"), Duration::from_secs(10), serves)
        .await
        .with_context(|| format!("version {version} never served: {:?}", host.plugins()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_code_is_cached_across_restarts_and_reverts_and_corrupt_entries_are_rebuilt() -> anyhow::Result<()> {
    let dir = PluginDir::with(&[])?;
    install(&dir, guests::SWAP_V1, "swap.wasm")?;
    let data = tempfile::tempdir()?;
    let runtime = RuntimeConfig { cache_dir: Some(data.path().join("cache")), ..RuntimeConfig::default() };
    let counts = |host: &Host| {
        let stats = &host.runtime().cache().expect("a cache is configured").stats;
        [&stats.hits, &stats.misses, &stats.rebuilt].map(|c| c.load(Ordering::Relaxed))
    };

    let first = start_host(&dir, runtime.clone()).await?;
    assert_eq!(counts(&first), [0, 1, 0], "compiled once");
    // A revert in a running node: v2 is compiled, v1 comes from the cache.
    install(&dir, guests::SWAP_V2, "swap.wasm")?;
    first.reload().await?;
    install(&dir, guests::SWAP_V1, "swap.wasm")?;
    first.reload().await?;
    assert_eq!(counts(&first), [1, 2, 0]);
    assert_eq!(answered_by(&dispatch(&first, "").await?)?, "1.0.0");
    drop(first);

    // A restart compiles nothing.
    let second = start_host(&dir, runtime.clone()).await?;
    assert_eq!(counts(&second), [1, 0, 0]);
    assert_eq!(answered_by(&dispatch(&second, "").await?)?, "1.0.0");
    drop(second);

    // One flipped bit in v1's entry: detected, removed, compiled again.
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(std::fs::read(guests::SWAP_V1)?));
    let entry = std::fs::read_dir(data.path().join("cache"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&digest)))
        .ok_or_else(|| anyhow::anyhow!("no cache entry for v1"))?;
    let mut bytes = std::fs::read(&entry)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&entry, &bytes)?;
    let third = start_host(&dir, runtime.clone()).await?;
    assert_eq!(counts(&third), [0, 0, 1]);
    assert_eq!(answered_by(&dispatch(&third, "").await?)?, "1.0.0");
    drop(third);
    // ... and the rebuilt entry serves the next start.
    let fourth = start_host(&dir, runtime).await?;
    assert_eq!(counts(&fourth), [1, 0, 0]);
    Ok(())
}
