//! What a host is started with: [`HostConfig`] and, for distributed mode,
//! [`MeshConfig`]. Plain values with defaults; the CLI fills them from its
//! flags, the configuration file and the environment.

use std::path::PathBuf;

use crate::credentials::{NatsAuth, RedisAuth};
use crate::dispatch::NestingConfig;
use crate::ledger::Liveness;
use crate::runtime::RuntimeConfig;
use crate::settle::SettleConfig;

/// What a host needs to start.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The plugins folder; `None` for a plugin-less dispatcher (a client).
    pub plugins: Option<PathBuf>,
    /// This node's id (default: the host name).
    pub node_id: String,
    /// Runtime limits.
    pub runtime: RuntimeConfig,
    /// Distributed mode: the NATS and Redis to join. `None`: embedded mode.
    pub mesh: Option<MeshConfig>,
    /// Limits on sub-tasks dispatched by workers.
    pub nesting: NestingConfig,
    /// Staged writes: expiry, limits, retention.
    pub settle: SettleConfig,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            plugins: Some(PathBuf::from("plugins")),
            node_id: default_node_id(),
            runtime: RuntimeConfig::default(),
            mesh: None,
            nesting: NestingConfig::default(),
            settle: SettleConfig::default(),
        }
    }
}

/// Where the mesh of distributed mode lives. Its `Debug` masks the
/// passwords of the URLs and every secret.
#[derive(Clone)]
pub struct MeshConfig {
    /// NATS URL, e.g. `nats://127.0.0.1:4222` (`tls://` requires TLS;
    /// `nats://user:password@host` and `nats://token@host` authenticate;
    /// several URLs separated by commas are servers of one cluster).
    pub nats: String,
    /// How to authenticate to NATS, beyond what the URL says.
    pub nats_auth: NatsAuth,
    /// Redis URL, e.g. `redis://127.0.0.1:6379`
    /// (`redis://user:password@host`, `rediss://` for TLS).
    pub redis: String,
    /// How to authenticate to Redis, beyond what the URL says.
    pub redis_auth: RedisAuth,
    /// How fast dead nodes are noticed.
    pub liveness: Liveness,
    /// How long to wait for NATS and Redis at start (and for each Redis call).
    pub connect_timeout: std::time::Duration,
    /// The node's private key file; default: `node.key` in the data folder,
    /// made on first start (a plugin-less client uses a key of the moment).
    pub key: Option<PathBuf>,
    /// The node's data folder (default: `trust::default_data_dir`).
    pub data_dir: Option<PathBuf>,
    /// Files or folders of trusted public keys.
    pub trust: Vec<PathBuf>,
    /// Also trust every node registered in the mesh (development only).
    pub trust_mesh: bool,
    /// Most tasks from the mesh the node runs (or waits to run) at once;
    /// more are answered `busy` at once, so that a flood is turned away
    /// instead of filling memory.
    pub max_tasks: usize,
}

impl MeshConfig {
    /// A mesh on these servers with default timings.
    pub fn new(nats: &str, redis: &str) -> Self {
        MeshConfig {
            nats: nats.to_owned(),
            nats_auth: NatsAuth::default(),
            redis: redis.to_owned(),
            redis_auth: RedisAuth::default(),
            liveness: Liveness::default(),
            connect_timeout: std::time::Duration::from_secs(5),
            key: None,
            data_dir: None,
            trust: Vec::new(),
            trust_mesh: false,
            max_tasks: crate::bus::DEFAULT_MAX_TASKS,
        }
    }

    /// Checks what can be checked before connecting to anything.
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.trust.is_empty() || self.trust_mesh,
            "distributed mode needs --trust PATH (files or a folder of trusted public keys) or, for development, \
             --trust-mesh (trust every node registered in this mesh)"
        );
        Ok(())
    }
}

impl std::fmt::Debug for MeshConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshConfig")
            .field("nats", &crate::credentials::redact_url(&self.nats))
            .field("nats_auth", &self.nats_auth)
            .field("redis", &crate::credentials::redact_url(&self.redis))
            .field("redis_auth", &self.redis_auth)
            .field("liveness", &self.liveness)
            .field("connect_timeout", &self.connect_timeout)
            .field("key", &self.key)
            .field("data_dir", &self.data_dir)
            .field("trust", &self.trust)
            .field("trust_mesh", &self.trust_mesh)
            .field("max_tasks", &self.max_tasks)
            .finish()
    }
}

/// The default node id: the machine's host name, or `local`.
pub fn default_node_id() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| anocast_wire::names::check_node_id(h).is_ok())
        .unwrap_or_else(|| "local".to_owned())
}
