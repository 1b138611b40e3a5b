//! The plugin set: loading every `.wasm` of the plugins folder.
//!
//! Files are loaded in name order, compiled in parallel off the async
//! executor. A file that fails (not a component, wrong world, `describe`
//! failing, a name another file already claimed) is recorded with its
//! reason and skipped: the other plugins still serve.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

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
}

/// What a plugins folder held.
#[derive(Debug, Clone, Default)]
pub struct PluginSet {
    /// Plugins that loaded, by file name.
    pub loaded: Vec<LoadedPlugin>,
    /// Files that did not.
    pub failed: Vec<PluginFailure>,
}

/// Reads one file and loads it as a plugin.
pub async fn load_file(runtime: &Runtime, file: &Path) -> Result<Plugin, String> {
    let bytes = tokio::fs::read(file).await.map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    runtime.load(bytes).await.map_err(|e: LoadError| e.to_string())
}

impl PluginSet {
    /// Loads every `.wasm` file in `dir`.
    pub async fn load_dir(runtime: &Runtime, dir: &Path) -> Result<Self, PluginDirError> {
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
        let loads = files.iter().map(|file| load_file(runtime, file));
        let results = futures::future::join_all(loads).await;
        let mut set = PluginSet::default();
        for (file, result) in files.into_iter().zip(results) {
            match result {
                Ok(plugin) => {
                    if let Some(first) = set.get(&plugin.info.name) {
                        let error =
                            format!("plugin name {:?} is already taken by {}", plugin.info.name, first.file.display());
                        tracing::error!(file = %file.display(), error, "plugin not loaded");
                        set.failed.push(PluginFailure { file, error });
                        continue;
                    }
                    tracing::info!(
                        file = %file.display(),
                        plugin = plugin.info.name,
                        version = plugin.info.version,
                        topics = ?plugin.info.topics.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
                        "plugin loaded"
                    );
                    set.loaded.push(LoadedPlugin { plugin: Arc::new(plugin), file, loaded_at: SystemTime::now() });
                }
                Err(error) => {
                    tracing::error!(file = %file.display(), error, "plugin not loaded");
                    set.failed.push(PluginFailure { file, error });
                }
            }
        }
        Ok(set)
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
