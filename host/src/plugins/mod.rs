//! The plugin set: the `.wasm` files of the plugins folder, loaded, and
//! kept in step with the folder while the node runs (hot reload, see
//! [`watch`]).
//!
//! [`PluginSet::rescan`] turns the folder's current contents and the set
//! loaded before into the next set, compiling only what changed (off the
//! async executor, several files at once):
//!
//! - a file whose content (SHA-256) is already loaded keeps that plugin,
//!   also under a new file name (a rename reloads nothing);
//! - a new or changed file is compiled and checked (a component of the
//!   `worker` world whose `describe` answers a valid name and patterns);
//! - a file that fails is recorded with its reason, and never replaces the
//!   version its file served before: that one keeps serving. A failed file
//!   is not compiled again until its content changes;
//! - two files claiming one plugin name: the one that held it first keeps
//!   it (at start, the first in name order), the other is recorded as
//!   failed;
//! - a plugin whose file is gone is unloaded.
//!
//! Applying the new set to the node (swap, subscribe, withdraw) is the
//! host's part ([`crate::Host::reload`]).

pub mod watch;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::runtime::{LoadError, Plugin, Runtime};

/// Why the plugins folder itself could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PluginDirError {
    /// The folder does not exist.
    #[error("plugins folder {0} does not exist")]
    Missing(PathBuf),
    /// The path is not a folder.
    #[error("{0} is not a folder")]
    NotAFolder(PathBuf),
    /// It could not be read.
    #[error("cannot read plugins folder {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// A plugin loaded from a file.
#[derive(Debug, Clone)]
pub struct LoadedPlugin {
    /// The plugin.
    pub plugin: Arc<Plugin>,
    /// The file it came from.
    pub file: PathBuf,
    /// When it was loaded.
    pub loaded_at: SystemTime,
}

/// A file that could not be loaded.
#[derive(Debug, Clone, Serialize)]
pub struct PluginFailure {
    /// The file.
    pub file: PathBuf,
    /// Why, in one line.
    pub error: String,
    /// SHA-256 of the content that failed (hex), when it could be read.
    pub digest: Option<String>,
    /// When it failed, in Unix milliseconds.
    pub failed_at_ms: u64,
    /// A name conflict: tried again at the next rescan even if unchanged,
    /// since the name may have been freed.
    #[serde(skip)]
    retry: bool,
}

impl PluginFailure {
    fn new(file: PathBuf, error: String, digest: Option<String>, retry: bool) -> Self {
        let failed_at_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        PluginFailure { file, error, digest, failed_at_ms, retry }
    }
}

/// What a plugins folder holds.
#[derive(Debug, Clone, Default)]
pub struct PluginSet {
    /// Plugins in service, in file name order.
    pub loaded: Vec<LoadedPlugin>,
    /// Files that failed, in file name order (a file can be both here and
    /// in `loaded`: its new content failed and its old version serves).
    pub failed: Vec<PluginFailure>,
}

/// What a rescan decided for one file.
enum Plan {
    /// The content is loaded already: keep that plugin.
    Keep(LoadedPlugin),
    /// The content failed before: keep that failure.
    StillBroken(PluginFailure),
    /// Compile these bytes.
    Compile(Vec<u8>, String),
    /// The file could not be read.
    Unreadable(String),
}

impl PluginSet {
    /// Loads every `.wasm` file in `dir`.
    pub async fn load_dir(runtime: &Runtime, dir: &Path) -> Result<Self, PluginDirError> {
        PluginSet::default().rescan(runtime, dir).await
    }

    /// The next set for `dir`'s contents now, reusing what this set loaded.
    ///
    /// It stays whole because the rules in the module doc (unchanged
    /// content reused, failures never replacing a working version, the
    /// first holder of a name keeping it) are applied in one pass over the
    /// folder, and each rule reads the decisions of the others.
    pub async fn rescan(&self, runtime: &Runtime, dir: &Path) -> Result<Self, PluginDirError> {
        let files = wasm_files(dir)?;
        let by_digest: HashMap<&str, &LoadedPlugin> =
            self.loaded.iter().map(|p| (p.plugin.digest.as_str(), p)).collect();
        let mut plans = Vec::with_capacity(files.len());
        for file in &files {
            let plan = match tokio::fs::read(file).await {
                Err(e) => Plan::Unreadable(format!("cannot read {}: {e}", file.display())),
                Ok(bytes) => {
                    let digest = hex::encode(Sha256::digest(&bytes));
                    let failed_before = self
                        .failed
                        .iter()
                        .find(|f| &f.file == file && f.digest.as_deref() == Some(&digest) && !f.retry);
                    match (by_digest.get(digest.as_str()), failed_before) {
                        (Some(loaded), _) => Plan::Keep(LoadedPlugin { file: file.clone(), ..(*loaded).clone() }),
                        (None, Some(failure)) => Plan::StillBroken(failure.clone()),
                        (None, None) => Plan::Compile(bytes, digest),
                    }
                }
            };
            plans.push(plan);
        }
        let compiles = plans.iter_mut().map(|plan| async move {
            match plan {
                Plan::Compile(bytes, _) => Some(runtime.load(std::mem::take(bytes)).await),
                _ => None,
            }
        });
        let compiled = futures::future::join_all(compiles).await;
        let mut new_loads = Vec::new();
        let mut broken = Vec::new();
        for ((file, plan), result) in files.iter().zip(&plans).zip(compiled) {
            match (plan, result) {
                (Plan::Compile(..), Some(Ok(plugin))) => new_loads.push((file.clone(), plugin)),
                (Plan::Compile(_, digest), Some(Err(error))) => {
                    let error: LoadError = error;
                    broken.push(PluginFailure::new(file.clone(), error.to_string(), Some(digest.clone()), false));
                }
                (Plan::StillBroken(failure), _) => broken.push(failure.clone()),
                (Plan::Unreadable(error), _) => {
                    broken.push(PluginFailure::new(file.clone(), error.clone(), None, false))
                }
                _ => {}
            }
        }

        let mut next = PluginSet::default();
        let mut holders: HashMap<String, PathBuf> = HashMap::new();
        let mut failures = Vec::new();
        // Who holds which name: plugins kept as they were first, then the
        // old versions of files whose new content fails, then new loads in
        // file name order.
        let kept = plans.iter().filter_map(|plan| match plan {
            Plan::Keep(loaded) => Some(loaded.clone()),
            _ => None,
        });
        let still_serving: Vec<LoadedPlugin> =
            broken.iter().filter_map(|failure| self.loaded.iter().find(|p| p.file == failure.file).cloned()).collect();
        for candidate in kept.chain(still_serving) {
            if let Err(failure) = next.claim(&mut holders, candidate) {
                failures.push(failure);
            }
        }
        for (file, plugin) in new_loads {
            let loaded = LoadedPlugin { plugin: Arc::new(plugin), file, loaded_at: SystemTime::now() };
            let (info, file) = (&loaded.plugin.info, loaded.file.clone());
            let (name, version) = (info.name.clone(), info.version.clone());
            let topics: Vec<String> = info.topics.iter().map(|t| t.as_str().to_owned()).collect();
            match next.claim(&mut holders, loaded) {
                Ok(()) => match self.get(&name) {
                    Some(old) => tracing::info!(
                        file = %file.display(), plugin = name, from = old.plugin.info.version, to = version, ?topics,
                        "plugin reloaded"
                    ),
                    None => tracing::info!(file = %file.display(), plugin = name, version, ?topics, "plugin loaded"),
                },
                Err(failure) => failures.push(failure),
            }
        }
        for failure in broken.into_iter().chain(failures) {
            // Logged once, when it is new.
            let known = self
                .failed
                .iter()
                .any(|f| f.file == failure.file && f.digest == failure.digest && f.error == failure.error);
            if !known {
                let serving = next.loaded.iter().any(|p| p.file == failure.file);
                tracing::error!(file = %failure.file.display(), error = failure.error, serving_old_version = serving, "plugin not loaded");
            }
            next.failed.push(failure);
        }
        let names: BTreeSet<&str> = next.loaded.iter().map(|p| p.plugin.info.name.as_str()).collect();
        for gone in self.loaded.iter().filter(|p| !names.contains(p.plugin.info.name.as_str())) {
            tracing::info!(file = %gone.file.display(), plugin = gone.plugin.info.name, "plugin unloaded");
        }
        next.loaded.sort_by(|a, b| a.file.cmp(&b.file));
        next.failed.sort_by(|a, b| a.file.cmp(&b.file));
        Ok(next)
    }

    /// Adds `plugin` unless another file holds its name.
    fn claim(&mut self, holders: &mut HashMap<String, PathBuf>, plugin: LoadedPlugin) -> Result<(), PluginFailure> {
        let name = &plugin.plugin.info.name;
        if let Some(holder) = holders.get(name) {
            let error = format!("plugin name {name:?} is already taken by {}", holder.display());
            return Err(PluginFailure::new(plugin.file, error, Some(plugin.plugin.digest.clone()), true));
        }
        holders.insert(name.clone(), plugin.file.clone());
        self.loaded.push(plugin);
        Ok(())
    }

    /// The loaded plugin named `name`.
    pub fn get(&self, name: &str) -> Option<&LoadedPlugin> {
        self.loaded.iter().find(|p| p.plugin.info.name == name)
    }

    /// The loaded plugins.
    pub fn plugins(&self) -> Vec<Arc<Plugin>> {
        self.loaded.iter().map(|p| p.plugin.clone()).collect()
    }
}

/// What changed from `before` to `next`, as lifecycle events (JSON objects
/// with `event`: `loaded`, `reloaded`, `unloaded` or `failed`).
pub fn changes(before: &PluginSet, next: &PluginSet) -> Vec<serde_json::Value> {
    let at_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    let plugin_event = |event: &str, p: &LoadedPlugin| {
        serde_json::json!({
            "event": event,
            "plugin": p.plugin.info.name,
            "version": p.plugin.info.version,
            "digest": p.plugin.digest,
            "file": p.file,
            "at_ms": at_ms,
        })
    };
    let mut events = Vec::new();
    for p in &next.loaded {
        match before.get(&p.plugin.info.name) {
            None => events.push(plugin_event("loaded", p)),
            Some(old) if !Arc::ptr_eq(&old.plugin, &p.plugin) => events.push(plugin_event("reloaded", p)),
            Some(_) => {}
        }
    }
    for p in before.loaded.iter().filter(|p| next.get(&p.plugin.info.name).is_none()) {
        events.push(plugin_event("unloaded", p));
    }
    for f in next.failed.iter().filter(|f| !before.failed.iter().any(|b| b.file == f.file && b.digest == f.digest)) {
        events.push(serde_json::json!({
            "event": "failed",
            "file": f.file,
            "digest": f.digest,
            "error": f.error,
            "at_ms": at_ms,
        }));
    }
    events
}

/// The `.wasm` files of `dir`, sorted.
fn wasm_files(dir: &Path) -> Result<Vec<PathBuf>, PluginDirError> {
    let meta = std::fs::metadata(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => PluginDirError::Missing(dir.to_owned()),
        _ => PluginDirError::Io(dir.to_owned(), e),
    })?;
    if !meta.is_dir() {
        return Err(PluginDirError::NotAFolder(dir.to_owned()));
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| PluginDirError::Io(dir.to_owned(), e))? {
        let path = entry.map_err(|e| PluginDirError::Io(dir.to_owned(), e))?.path();
        if path.extension().is_some_and(|ext| ext == "wasm") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}
