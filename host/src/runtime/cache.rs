//! The compiled-code cache: machine code compiled from a plugin's component,
//! kept in the node's data folder (never in the plugins folder: precompiled
//! code is code, and only this node writes it) so that restarts and reverts
//! do not compile again.
//!
//! An entry is keyed by the component's SHA-256 and by a hash of everything
//! that makes compiled code compatible with this engine (wasmtime's version,
//! target and settings): `<digest>-<engine>.cwasm`. Its content is a header
//! (`anocast-cwasm-v1`, then the SHA-256 of the rest) and wasmtime's
//! serialized component. The checksum is verified before wasmtime reads the
//! code, so a corrupt entry (a flipped bit, a truncated write) is detected,
//! removed and compiled again, never run. Entries are written to a
//! temporary file and renamed into place, so a reader never sees half of
//! one.
//!
//! Deserializing compiled code is `unsafe` in wasmtime because the bytes
//! are trusted to be its own output; this module is the one place that does
//! it, and only with bytes whose checksum matches what this node wrote.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

const MAGIC: &[u8; 16] = b"anocast-cwasm-v1";

/// A folder of compiled components.
#[derive(Debug)]
pub struct CodeCache {
    dir: PathBuf,
    engine_key: String,
    /// What it has done since it was opened.
    pub stats: CacheStats,
}

/// Counters of a [`CodeCache`].
#[derive(Debug, Default, serde::Serialize)]
pub struct CacheStats {
    /// Components read from the cache instead of compiled.
    pub hits: AtomicU64,
    /// Components compiled because no entry existed.
    pub misses: AtomicU64,
    /// Corrupt or unreadable entries, removed and compiled again.
    pub rebuilt: AtomicU64,
}

/// Feeds `Hash` output into SHA-256, for a key that is stable across builds.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        0
    }
}

impl CodeCache {
    /// Opens (creating it, owner-only) the cache folder `dir` for `engine`.
    pub fn open(dir: &Path, engine: &Engine) -> anyhow::Result<Self> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(|e| anyhow::anyhow!("cannot create the code cache {}: {e}", dir.display()))?;
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = hex::encode(&hasher.0.finalize()[..8]);
        Ok(CodeCache { dir: dir.to_owned(), engine_key, stats: CacheStats::default() })
    }

    /// The entry of the component whose SHA-256 is `digest` (hex).
    pub fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_key))
    }

    /// The component `bytes` (SHA-256 `digest`), from the cache or compiled
    /// (and then cached). Blocking: call it off the async executor.
    pub fn get_or_compile(&self, engine: &Engine, digest: &str, bytes: &[u8]) -> wasmtime::Result<Component> {
        let path = self.path(digest);
        match self.read(engine, &path) {
            Ok(Some(component)) => {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(component);
            }
            Ok(None) => {
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
            }
            Err(why) => {
                self.stats.rebuilt.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(entry = %path.display(), why, "corrupt compiled-code cache entry; compiling again");
                let _ = std::fs::remove_file(&path);
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(err) = self.write(&path, &component) {
            tracing::warn!(entry = %path.display(), "could not write the compiled-code cache: {err:#}");
        }
        Ok(component)
    }

    /// `Ok(None)`: no entry. `Err`: an entry that cannot be used.
    fn read(&self, engine: &Engine, path: &Path) -> Result<Option<Component>, String> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("unreadable: {e}")),
        };
        let header = MAGIC.len() + 32;
        if bytes.len() < header || &bytes[..MAGIC.len()] != MAGIC {
            return Err("not an anocast cache entry".into());
        }
        let (sum, code) = bytes[MAGIC.len()..].split_at(32);
        if Sha256::digest(code).as_slice() != sum {
            return Err("checksum mismatch".into());
        }
        // SAFETY: `code` is exactly what `write` stored: wasmtime's own
        // serialization of a component compiled by this node, for an engine
        // with the same compatibility hash (it is in the file name), and its
        // SHA-256 has just been checked. wasmtime also checks its own header
        // and engine settings before using it.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, code) };
        component.map(Some).map_err(|e| format!("wasmtime refused it: {e}"))
    }

    fn write(&self, path: &Path, component: &Component) -> anyhow::Result<()> {
        let code = component.serialize()?;
        let mut bytes = Vec::with_capacity(MAGIC.len() + 32 + code.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&Sha256::digest(&code));
        bytes.extend_from_slice(&code);
        let aside = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&aside, &bytes)?;
        std::fs::rename(&aside, path)?;
        Ok(())
    }
}
