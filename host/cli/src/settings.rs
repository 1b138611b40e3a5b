//! The one layered merge of a command's settings: a flag (or its `ANOCAST_*`
//! variable, which clap reads as the flag) wins over the configuration
//! file, which wins over the library's defaults. Every command that starts a
//! host gets its [`HostConfig`] from here, merged once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anocast::dispatch::NestingConfig;
use anocast::gateway::GatewayConfig;
use anocast::ledger::Liveness;
use anocast::runtime::RuntimeConfig;
use anocast::settle::SettleConfig;
use anocast::{HostConfig, MeshConfig, NatsAuth, RedisAuth, Secret, TlsFiles};
use anyhow::{Context, bail};

use crate::args::{AuthArgs, DispatchArgs, HttpArgs, LimitArgs, MeshArgs, RunArgs, ServeArgs};
use crate::config::FileConfig;

/// The HTTP API's address when neither a flag nor the file gives one.
pub(crate) const DEFAULT_HTTP: SocketAddr =
    SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 7700));

/// What `anocast serve` runs with.
pub(crate) struct Serve {
    /// The host.
    pub(crate) host: HostConfig,
    /// Where the HTTP API listens.
    pub(crate) http: SocketAddr,
    /// How the HTTP API is guarded and bounded.
    pub(crate) gateway: GatewayConfig,
}

/// The API token: the file's first line when a file is given, else
/// `ANOCAST_API_TOKEN`. A token file others may read is warned about.
pub(crate) fn api_token(file: Option<&Path>) -> anyhow::Result<Option<Secret>> {
    let Some(path) = file else {
        return Ok(std::env::var("ANOCAST_API_TOKEN").ok().filter(|t| !t.is_empty()).map(Secret::new));
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read the API token file {}", path.display()))?;
    let token = text.lines().next().unwrap_or_default().trim();
    anyhow::ensure!(!token.is_empty(), "the API token file {} is empty", path.display());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
            tracing::warn!(file = %path.display(), "the API token file can be read by other users; chmod 600 it");
        }
    }
    Ok(Some(Secret::new(token)))
}

/// The HTTP API's guards: flags over the file over the library's defaults.
fn gateway(args: &HttpArgs, file: &FileConfig) -> anyhow::Result<GatewayConfig> {
    let defaults = GatewayConfig::default();
    let pick = |flag: &Vec<String>, key: &Vec<String>| if flag.is_empty() { key.clone() } else { flag.clone() };
    Ok(GatewayConfig {
        token: api_token(args.api_token_file.as_deref().or(file.api_token_file.as_deref()))?,
        allowed_hosts: pick(&args.allowed_host, &file.allowed_hosts),
        cors_origins: pick(&args.cors_origin, &file.cors_origins),
        header_timeout: duration(
            args.http_header_timeout,
            file,
            "http_header_timeout",
            file.http_header_timeout.as_deref(),
            defaults.header_timeout,
        )?,
        body_timeout: duration(
            args.http_body_timeout,
            file,
            "http_body_timeout",
            file.http_body_timeout.as_deref(),
            defaults.body_timeout,
        )?,
        request_timeout: duration(
            args.http_request_timeout,
            file,
            "http_request_timeout",
            file.http_request_timeout.as_deref(),
            defaults.request_timeout,
        )?,
        max_connections: args
            .http_max_connections
            .or(file.http_max_connections)
            .map_or(defaults.max_connections, |n| n as usize),
        max_concurrent: args
            .http_max_concurrent
            .or(file.http_max_concurrent)
            .map_or(defaults.max_concurrent, |n| n as usize),
    })
}

/// A duration: the flag's, else the file's (parsed), else `default`.
fn duration(
    flag: Option<Duration>,
    file: &FileConfig,
    key: &str,
    value: Option<&str>,
    default: Duration,
) -> anyhow::Result<Duration> {
    match flag {
        Some(d) => Ok(d),
        None => Ok(file.duration(key, value)?.unwrap_or(default)),
    }
}

fn runtime(limits: &LimitArgs, file: &FileConfig) -> anyhow::Result<RuntimeConfig> {
    let defaults = RuntimeConfig::default();
    Ok(RuntimeConfig {
        memory_limit: limits.memory_limit.or(file.memory_limit_mib).map_or(defaults.memory_limit, |mib| mib << 20),
        call_timeout: duration(
            limits.call_timeout,
            file,
            "call_timeout",
            file.call_timeout.as_deref(),
            defaults.call_timeout,
        )?,
        max_instances: limits.max_instances.or(file.max_instances).unwrap_or(defaults.max_instances),
        warm_instances: limits.warm_instances.or(file.warm_instances).map_or(defaults.warm_instances, |n| n as usize),
        memory_budget: limits.memory_budget.or(file.memory_budget_mib).map_or(defaults.memory_budget, |mib| mib << 20),
        ..defaults
    })
}

fn settle(limits: &LimitArgs, file: &FileConfig) -> anyhow::Result<SettleConfig> {
    let defaults = SettleConfig::default();
    Ok(SettleConfig {
        expiry: duration(limits.stage_expiry, file, "stage_expiry", file.stage_expiry.as_deref(), defaults.expiry)?,
        retention: duration(
            limits.store_retention,
            file,
            "store_retention",
            file.store_retention.as_deref(),
            defaults.retention,
        )?,
        ..defaults
    })
}

fn nesting(limits: &LimitArgs, file: &FileConfig) -> anyhow::Result<NestingConfig> {
    let defaults = NestingConfig::default();
    Ok(NestingConfig {
        max_depth: limits.max_depth.or(file.max_depth).unwrap_or(defaults.max_depth),
        margin: duration(limits.nested_margin, file, "nested_margin", file.nested_margin.as_deref(), defaults.margin)?,
    })
}

/// Distributed mode when both servers are given, embedded when neither.
fn mesh(nats: Option<String>, redis: Option<String>, liveness: Option<Duration>) -> anyhow::Result<Option<MeshConfig>> {
    match (nats, redis) {
        (None, None) => Ok(None),
        (Some(nats), Some(redis)) => {
            let mut mesh = MeshConfig::new(&nats, &redis);
            if let Some(ttl) = liveness {
                mesh.liveness = Liveness::from_ttl(ttl);
            }
            Ok(Some(mesh))
        }
        (Some(_), None) => bail!("distributed mode needs --redis as well as --nats"),
        (None, Some(_)) => bail!("distributed mode needs --nats as well as --redis"),
    }
}

/// The credentials of both connections: each flag (or variable) over the
/// file's key of the same name.
fn auth(args: &AuthArgs, file: &FileConfig) -> (NatsAuth, RedisAuth) {
    let pick = |flag: &Option<PathBuf>, key: &Option<PathBuf>| flag.clone().or(key.clone());
    let secret = |flag: &Option<String>, key: &Option<String>| flag.clone().or(key.clone()).map(Secret::new);
    let nats = NatsAuth {
        user: args.nats_user.clone().or(file.nats_user.clone()),
        password: secret(&args.nats_password, &file.nats_password),
        token: secret(&args.nats_token, &file.nats_token),
        nkey: pick(&args.nats_nkey, &file.nats_nkey),
        creds: pick(&args.nats_creds, &file.nats_creds),
        tls: TlsFiles {
            ca: pick(&args.nats_tls_ca, &file.nats_tls_ca),
            cert: pick(&args.nats_tls_cert, &file.nats_tls_cert),
            key: pick(&args.nats_tls_key, &file.nats_tls_key),
        },
    };
    let redis = RedisAuth {
        user: args.redis_user.clone().or(file.redis_user.clone()),
        password: secret(&args.redis_password, &file.redis_password),
        tls: TlsFiles {
            ca: pick(&args.redis_tls_ca, &file.redis_tls_ca),
            cert: pick(&args.redis_tls_cert, &file.redis_tls_cert),
            key: pick(&args.redis_tls_key, &file.redis_tls_key),
        },
    };
    (nats, redis)
}

fn serve_mesh(args: &MeshArgs, file: &FileConfig) -> anyhow::Result<Option<MeshConfig>> {
    let liveness = match args.liveness {
        Some(d) => Some(d),
        None => file.duration("liveness", file.liveness.as_deref())?,
    };
    let Some(mut mesh) =
        mesh(args.nats.clone().or(file.nats.clone()), args.redis.clone().or(file.redis.clone()), liveness)?
    else {
        return Ok(None);
    };
    (mesh.nats_auth, mesh.redis_auth) = auth(&args.auth, file);
    if let Some(n) = args.max_tasks.or(file.max_tasks) {
        mesh.max_tasks = n as usize;
    }
    mesh.key = args.key.clone().or(file.key.clone());
    mesh.data_dir = args.data_dir.clone().or(file.data_dir.clone());
    mesh.trust = if args.trust.trust.is_empty() { file.trust.clone() } else { args.trust.trust.clone() };
    mesh.trust_mesh = args.trust.trust_mesh || file.trust_mesh.unwrap_or(false);
    Ok(Some(mesh))
}

/// `anocast serve`'s settings: flags over `--config FILE` over defaults.
pub(crate) fn serve(args: &ServeArgs) -> anyhow::Result<Serve> {
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let plugins = args
        .plugins
        .clone()
        .or_else(|| file.plugins.clone())
        .context("no plugins folder: give --plugins DIR (or `plugins` in the config file)")?;
    let http = match args.http {
        Some(http) => http,
        None => file.http()?.unwrap_or(DEFAULT_HTTP),
    };
    let mesh = serve_mesh(&args.mesh, &file)?;
    let node_id = args.node_id.clone().or(file.node_id.clone()).unwrap_or_else(anocast::default_node_id);
    anocast::names::check_node_id(&node_id)?;
    let data_dir = args
        .mesh
        .data_dir
        .clone()
        .or(file.data_dir.clone())
        .unwrap_or_else(|| anocast::trust::default_data_dir(&node_id));
    let mut runtime = runtime(&args.limits, &file)?;
    runtime.cache_dir = Some(data_dir.join("cache"));
    let host = HostConfig {
        plugins: Some(plugins),
        mesh,
        node_id,
        runtime,
        nesting: nesting(&args.limits, &file)?,
        settle: settle(&args.limits, &file)?,
    };
    let gateway = gateway(&args.http_api, &file)?;
    gateway.check(http)?;
    Ok(Serve { host, http, gateway })
}

/// `anocast run`'s settings: flags over defaults (it reads no file).
pub(crate) fn run(args: &RunArgs) -> anyhow::Result<HostConfig> {
    let file = FileConfig::default();
    let mut runtime = runtime(&args.limits, &file)?;
    let data_dir = args.data_dir.clone().unwrap_or_else(|| anocast::trust::default_data_dir("local"));
    runtime.cache_dir = Some(data_dir.join("cache"));
    Ok(HostConfig {
        plugins: Some(args.plugins.clone()),
        node_id: "local".into(),
        runtime,
        mesh: None,
        nesting: nesting(&args.limits, &file)?,
        settle: settle(&args.limits, &file)?,
    })
}

/// `anocast dispatch --nats --redis`: a plugin-less client of the mesh;
/// `None` when the dispatch goes through a node's HTTP API instead.
pub(crate) fn client(args: &DispatchArgs) -> anyhow::Result<Option<HostConfig>> {
    let Some(mut mesh) = mesh(args.nats.clone(), args.redis.clone(), None)? else { return Ok(None) };
    mesh.trust = args.trust.trust.clone();
    mesh.trust_mesh = args.trust.trust_mesh;
    mesh.key = args.key.clone();
    anocast::names::check_node_id(&args.client_id).context("--client-id")?;
    (mesh.nats_auth, mesh.redis_auth) = auth(&args.auth, &FileConfig::default());
    Ok(Some(HostConfig {
        plugins: None,
        node_id: args.client_id.clone(),
        runtime: RuntimeConfig { max_instances: 1, ..RuntimeConfig::default() },
        mesh: Some(mesh),
        nesting: NestingConfig::default(),
        settle: SettleConfig::default(),
    }))
}
