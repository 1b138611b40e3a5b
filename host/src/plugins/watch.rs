//! Watching the plugins folder: changes to `.wasm` files in it (written,
//! replaced, removed, renamed) are debounced with notify's mini debouncer,
//! so that a file written slowly, or by an editor's write-then-rename, is
//! looked at once it has been quiet for the debounce period. What a batch
//! of changes means is decided by rescanning the whole folder
//! ([`super::PluginSet::rescan`]): a half-written file that is looked at
//! anyway fails to load and never replaces the version it would succeed.

use std::path::Path;
use std::time::Duration;

use notify_debouncer_mini::notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};
use tokio::sync::mpsc;

/// How long a file must be quiet before it is looked at, by default.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(300);

/// A running watch; dropping it stops watching.
pub struct Watch {
    _debouncer: Debouncer<RecommendedWatcher>,
}

/// Watches `dir`; each batch of changes to `.wasm` files in it sends one
/// `()` on the returned channel (batches that arrive while the receiver is
/// busy are merged).
pub fn watch(dir: &Path, debounce: Duration) -> anyhow::Result<(Watch, mpsc::Receiver<()>)> {
    let (tx, rx) = mpsc::channel(1);
    let mut debouncer = new_debouncer(debounce, move |result: DebounceEventResult| match result {
        Ok(events) => {
            if events.iter().any(|e| e.path.extension().is_some_and(|ext| ext == "wasm")) {
                // Full means a rescan is pending already, which will see
                // these changes too.
                let _ = tx.try_send(());
            }
        }
        Err(err) => tracing::warn!(%err, "watching the plugins folder"),
    })
    .map_err(|e| anyhow::anyhow!("cannot watch {}: {e}", dir.display()))?;
    debouncer
        .watcher()
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(|e| anyhow::anyhow!("cannot watch {}: {e}", dir.display()))?;
    Ok((Watch { _debouncer: debouncer }, rx))
}
