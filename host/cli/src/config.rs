//! The node's configuration file (TOML). Every key is optional; flags and
//! `ANOCAST_*` environment variables override it. Unknown keys are errors,
//! so a typo never passes silently.
//!
//! ```toml
//! plugins = "target/plugins"
//! http = "127.0.0.1:7700"
//! api_token_file = "/etc/anocast/api.token"
//! allowed_hosts = ["node-a.example"]
//! http_max_concurrent = 128
//! node_id = "node-a"
//! nats = "nats://127.0.0.1:4222"
//! redis = "redis://127.0.0.1:6379"
//! nats_creds = "/etc/anocast/node.creds"
//! nats_tls_ca = "/etc/anocast/ca.pem"
//! redis_user = "anocast"
//! redis_password = "..."   # a file holding a secret: keep it owner-only
//! liveness = "3s"
//! key = "/etc/anocast/node.key"
//! data_dir = "/var/lib/anocast"
//! trust = ["/etc/anocast/trusted"]
//! trust_mesh = false
//! memory_limit_mib = 64
//! memory_budget_mib = 4096   # default: half of the machine's memory
//! call_timeout = "10s"
//! max_instances = 1000
//! warm_instances = 4
//! max_depth = 8
//! nested_margin = "50ms"
//! stage_expiry = "30s"
//! store_retention = "7days"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

/// The file's contents.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub plugins: Option<PathBuf>,
    pub http: Option<String>,
    pub node_id: Option<String>,
    pub nats: Option<String>,
    pub redis: Option<String>,
    pub api_token_file: Option<PathBuf>,
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    #[serde(default)]
    pub cors_origins: Vec<String>,
    pub http_header_timeout: Option<String>,
    pub http_body_timeout: Option<String>,
    pub http_request_timeout: Option<String>,
    pub http_max_connections: Option<u32>,
    pub http_max_concurrent: Option<u32>,
    pub nats_user: Option<String>,
    pub nats_password: Option<String>,
    pub nats_token: Option<String>,
    pub nats_nkey: Option<PathBuf>,
    pub nats_creds: Option<PathBuf>,
    pub nats_tls_ca: Option<PathBuf>,
    pub nats_tls_cert: Option<PathBuf>,
    pub nats_tls_key: Option<PathBuf>,
    pub redis_user: Option<String>,
    pub redis_password: Option<String>,
    pub redis_tls_ca: Option<PathBuf>,
    pub redis_tls_cert: Option<PathBuf>,
    pub redis_tls_key: Option<PathBuf>,
    pub liveness: Option<String>,
    pub max_tasks: Option<u32>,
    pub key: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub trust: Vec<PathBuf>,
    pub trust_mesh: Option<bool>,
    pub memory_limit_mib: Option<u64>,
    pub memory_budget_mib: Option<u64>,
    pub call_timeout: Option<String>,
    pub max_instances: Option<u32>,
    pub warm_instances: Option<u32>,
    pub max_depth: Option<u32>,
    pub nested_margin: Option<String>,
    pub stage_expiry: Option<String>,
    pub store_retention: Option<String>,
}

impl FileConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
        let config: FileConfig = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message()))
            .with_context(|| format!("invalid config file {}", path.display()))?;
        let secrets = [&config.nats_password, &config.nats_token, &config.redis_password];
        #[cfg(unix)]
        if secrets.iter().any(|s| s.is_some()) {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
            anyhow::ensure!(
                mode & 0o077 == 0,
                "config file {} holds a password or token and others may read it (mode {mode:o}); chmod 600 {}",
                path.display(),
                path.display()
            );
        }
        #[cfg(not(unix))]
        let _ = secrets;
        if let Some(mib) = config.memory_limit_mib {
            anyhow::ensure!((1..=4096).contains(&mib), "{}: memory_limit_mib must be 1-4096", path.display());
        }
        if config.memory_budget_mib == Some(0) {
            anyhow::bail!("{}: memory_budget_mib must be at least 1", path.display());
        }
        if let Some(n) = config.max_instances {
            anyhow::ensure!((1..=100_000).contains(&n), "{}: max_instances must be 1-100000", path.display());
        }
        if let Some(n) = config.warm_instances {
            anyhow::ensure!(n <= 1000, "{}: warm_instances must be 0-1000", path.display());
        }
        if let Some(n) = config.max_tasks {
            anyhow::ensure!((1..=1_000_000).contains(&n), "{}: max_tasks must be 1-1000000", path.display());
        }
        if let Some(n) = config.max_depth {
            anyhow::ensure!(n <= 64, "{}: max_depth must be 0-64", path.display());
        }
        Ok(config)
    }

    /// The `http` address, parsed.
    pub fn http(&self) -> anyhow::Result<Option<SocketAddr>> {
        self.http
            .as_deref()
            .map(|a| a.parse().with_context(|| format!("config file: invalid http address {a:?}")))
            .transpose()
    }

    /// A duration key, parsed.
    pub fn duration(&self, key: &str, value: Option<&str>) -> anyhow::Result<Option<Duration>> {
        value
            .map(|v| {
                crate::args::parse_duration(v).map_err(|e| anyhow::anyhow!("config file: invalid {key} {v:?}: {e}"))
            })
            .transpose()
    }
}
