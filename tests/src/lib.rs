//! Helpers for anocast's integration tests: the paths of the guests built
//! from source by `build.rs`, plugin folders assembled from them, and a way
//! to run the `anocast` command.

use std::path::{Path, PathBuf};

use anocast::{DispatchOptions, Host, HostConfig, RuntimeConfig};

/// Paths of the components built by `build.rs`.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

/// A temporary plugins folder holding copies of some guests. Removed on drop.
pub struct PluginDir {
    dir: tempfile::TempDir,
}

impl PluginDir {
    /// A folder with each of `guests` (paths from [`guests`]) copied in.
    pub fn with(guests: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        for guest in guests {
            let name = Path::new(guest).file_name().ok_or_else(|| anyhow::anyhow!("no file name in {guest}"))?;
            std::fs::copy(guest, dir.path().join(name))?;
        }
        Ok(PluginDir { dir })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `bytes` into the folder as `name`.
    pub fn write(&self, name: &str, bytes: &[u8]) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes)?;
        Ok(path)
    }
}

/// Starts an embedded host on `dir` with node id `test` and `runtime` limits.
pub async fn start_host(dir: &PluginDir, runtime: RuntimeConfig) -> anyhow::Result<Host> {
    Host::start(HostConfig { plugins: dir.path().to_owned(), node_id: "test".into(), runtime }).await
}

/// Dispatch options with the given grace and timeout, in milliseconds.
pub fn options(grace_ms: u64, timeout_ms: u64) -> DispatchOptions {
    DispatchOptions {
        grace: std::time::Duration::from_millis(grace_ms),
        timeout: std::time::Duration::from_millis(timeout_ms),
        ..DispatchOptions::default()
    }
}
