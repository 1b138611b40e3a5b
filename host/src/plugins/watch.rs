//! Watching the plugins folder: changes to `.wasm` files in it (written,
//! replaced, removed, renamed) are debounced with notify's debouncer,
//! so that a file written slowly, or by an editor's write-then-rename, is
//! looked at once it has been quiet for the debounce period. What a batch
//! of changes means is decided by rescanning the whole folder
//! ([`super::PluginSet::rescan`]): a half-written file that is looked at
//! anyway fails to load and never replaces the version it would succeed.

use std::path::Path;
use std::time::Duration;

use notify_debouncer_full::notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::mpsc;

/// How long a file must be quiet before it is looked at, by default: short,
/// so that a new version serves soon after it lands (a file looked at while
/// still being written fails to load and replaces nothing; the end of the
/// write brings it up again).
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(50);

/// A running watch; dropping it stops watching.
pub struct Watch {
    _debouncer: Debouncer<RecommendedWatcher, RecommendedCache>,
}

/// Watches `dir`; each batch of changes to `.wasm` files in it sends one
/// `()` on the returned channel (batches that arrive while the receiver is
/// busy are merged).
pub fn watch(dir: &Path, debounce: Duration) -> anyhow::Result<(Watch, mpsc::Receiver<()>)> {
    let (tx, rx) = mpsc::channel(1);
    let mut debouncer = new_debouncer(debounce, None, move |result: DebounceEventResult| match result {
        Ok(events) => {
            // Reads (the rescan's own among them) are not changes.
            let changed = events.iter().any(|e| {
                !matches!(e.kind, EventKind::Access(_))
                    && e.paths.iter().any(|p| p.extension().is_some_and(|ext| ext == "wasm"))
            });
            if changed {
                // Full means a rescan is pending already, which will see
                // these changes too.
                let _ = tx.try_send(());
            }
        }
        Err(errors) => {
            for err in errors {
                tracing::warn!(%err, "watching the plugins folder");
            }
        }
    })
    .map_err(|e| anyhow::anyhow!("cannot watch {}: {e}", dir.display()))?;
    debouncer
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(|e| anyhow::anyhow!("cannot watch {}: {e}", dir.display()))?;
    Ok((Watch { _debouncer: debouncer }, rx))
}
