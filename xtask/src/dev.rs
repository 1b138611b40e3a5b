//! The development loop of `cargo xtask dev`: while `anocast serve` runs on
//! `target/plugins`, watch the plugins' sources (and the SDK and the WIT
//! contract they all build on), rebuild what changed and install it into
//! `target/plugins`, where the node swaps it in. A plugin that fails to
//! build leaves the last good version serving.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::Duration;

use notify_debouncer_full::notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, new_debouncer};

use anocast_build::{Lang, Tools};

use crate::{all_plugins, build_plugin, cargo_wasm, root, rust_plugins, step, workspace_member};

/// Rebuilds on every source change until `node` exits.
pub fn rebuild_on_change(mut node: Child, tools: Tools) -> anyhow::Result<()> {
    let root = root();
    let (tx, rx) = channel::<Vec<PathBuf>>();
    let mut debouncer = new_debouncer(Duration::from_millis(300), None, move |result: DebounceEventResult| {
        if let Ok(events) = result {
            // Reads (the compiler's among them) are not changes.
            let changed = events.into_iter().filter(|e| !matches!(e.kind, EventKind::Access(_)));
            let _ = tx.send(changed.flat_map(|e| e.event.paths).collect());
        }
    })?;
    for watched in ["plugins", "guest-sdk/src", "wit"] {
        debouncer.watch(root.join(watched), RecursiveMode::Recursive)?;
    }
    loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(paths) => {
                let names = affected(&root, &paths)?;
                if !names.is_empty() {
                    rebuild(&names, &tools);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => anyhow::bail!("the source watcher stopped"),
        }
        if let Some(status) = node.try_wait()? {
            anyhow::ensure!(status.success(), "anocast serve stopped ({status})");
            return Ok(());
        }
    }
}

/// The plugins that changed `paths` concern: one plugin's own files, or
/// all of them for the SDK, the WIT contract or the workspace's manifest.
fn affected(root: &Path, paths: &[PathBuf]) -> anyhow::Result<BTreeSet<String>> {
    let rust = rust_plugins()?;
    let all: Vec<String> = all_plugins()?.into_iter().map(|(name, _)| name).collect();
    let mut names = BTreeSet::new();
    for path in paths {
        let Ok(relative) = path.strip_prefix(root) else { continue };
        let parts: Vec<_> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        // Build output and caches (target/, __pycache__/, node_modules/, C
        // bindings, dot-files) are not sources.
        if relative.iter().any(|p| anocast_build::is_build_output(Path::new(p))) {
            continue;
        }
        match parts.as_slice() {
            [top, ..] if top == "wit" => names.extend(all.iter().cloned()),
            [top, ..] if top == "guest-sdk" => names.extend(rust.iter().cloned()),
            [top, file] if top == "plugins" && (file == "Cargo.toml" || file == "Cargo.lock") => {
                names.extend(rust.iter().cloned())
            }
            [top, plugin, ..] if top == "plugins" && all.contains(plugin) => {
                names.insert(plugin.clone());
            }
            _ => {}
        }
    }
    Ok(names)
}

fn rebuild(names: &BTreeSet<String>, tools: &Tools) {
    for name in names {
        step(&format!("{name} changed: rebuilding"));
        let Some(lang) = Lang::detect(&root().join("plugins").join(name)) else { continue };
        let built = if lang == Lang::Rust && workspace_member(name) {
            cargo_wasm(&["build"], "plugins/Cargo.toml", &["-p", name], &[])
                .and_then(|()| build_plugin(name, lang, tools))
        } else {
            build_plugin(name, lang, tools)
        };
        match built {
            Ok(path) => eprintln!("{name}: installed {}; the node swaps it in", path.display()),
            Err(err) => eprintln!("{name}: {err:#}; the node keeps serving the last good version"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_rebuilds_the_plugins_it_concerns() -> anyhow::Result<()> {
        let root = root();
        let rust: BTreeSet<String> = rust_plugins()?.into_iter().collect();
        let plugins = all_plugins()?;
        let python: BTreeSet<String> =
            plugins.iter().filter(|(_, lang)| *lang == Lang::Python).map(|(name, _)| name.clone()).collect();
        let all: BTreeSet<String> = plugins.into_iter().map(|(name, _)| name).collect();
        let one = rust.iter().next().cloned().ok_or_else(|| anyhow::anyhow!("no Rust plugin in plugins/"))?;
        let py = python.iter().next().cloned().ok_or_else(|| anyhow::anyhow!("no Python plugin in plugins/"))?;
        let concerned = |paths: &[&str]| affected(&root, &paths.iter().map(|p| root.join(p)).collect::<Vec<_>>());
        assert_eq!(concerned(&[&format!("plugins/{one}/src/lib.rs")])?, BTreeSet::from([one.clone()]));
        assert_eq!(concerned(&[&format!("plugins/{one}/Cargo.toml")])?, BTreeSet::from([one.clone()]));
        assert_eq!(concerned(&[&format!("plugins/{py}/app.py")])?, BTreeSet::from([py.clone()]));
        assert_eq!(concerned(&["guest-sdk/src/lib.rs"])?, rust, "the Rust SDK concerns Rust plugins only");
        assert_eq!(concerned(&["wit/worker.wit"])?, all);
        assert_eq!(concerned(&["plugins/Cargo.toml"])?, rust);
        assert!(
            concerned(&[&format!("plugins/{one}/target/debug/x"), "plugins/no-such-plugin/src/lib.rs"])?.is_empty()
        );
        // What builds leave in a plugin's folder is not a change to it.
        assert!(
            concerned(&[
                &format!("plugins/{py}/__pycache__/app.cpython-311.pyc"),
                "plugins/byte-stats/bindings/worker.h",
                &format!("plugins/{py}/.app.py.swp"),
            ])?
            .is_empty()
        );
        assert!(concerned(&["/elsewhere/lib.rs", "README.md"])?.is_empty());
        Ok(())
    }
}
