//! The `anocast` command: clap definitions and what each subcommand does.
//!
//! Output conventions: results (outcome JSON, plugin lists) go to stdout;
//! logs and errors go to stderr, an error as one line `error: ...`.
//!
//! Exit status: 0 success (a dispatch that completed); 1 an error; 2 bad
//! usage; 3 a dispatch that ended `no_interest`; 4 one that ended
//! `timed_out`; 5 one that ended `incomplete`.

mod author;
mod client;
mod config;

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::bus::Decision;
use crate::dispatch::{DispatchOptions, NestingConfig, Status};
use crate::ledger::Liveness;
use crate::runtime::{Runtime, RuntimeConfig};
use crate::settle::{SettleConfig, SettlePolicy};
use crate::{Host, HostConfig, MeshConfig, Topic};

const AFTER_HELP: &str = "\
Exit status: 0 success (for a dispatch: it completed), 1 error, 2 bad usage,
3 the dispatch ended no_interest, 4 it ended timed_out, 5 it ended incomplete
(a declared worker's node died).

Environment: ANOCAST_LOG (or RUST_LOG) sets the log filter, e.g. `debug` or
`anocast=debug`; logs go to stderr.";

/// anocast: a WebAssembly plugin host for event-driven service composition.
///
/// Workers are WebAssembly components in a plugins folder. A task is broadcast
/// to every plugin whose topic patterns match; each decides from the payload
/// whether it is interested, declares itself, and replies; the replies are
/// joined into one outcome.
#[derive(Debug, Parser)]
#[command(name = "anocast", version, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node: load the plugins folder and serve the HTTP API.
    Serve(ServeArgs),
    /// Dispatch a task through a running node and print the outcome JSON.
    Dispatch(DispatchArgs),
    /// Load a plugins folder, dispatch one task in-process, print the outcome
    /// JSON and exit (no server needed).
    Run(RunArgs),
    /// List or check plugins.
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// Commit or abort the writes the workers of a dispatch staged (for a
    /// dispatch made with --settle manual), through a running node.
    Settle(SettleArgs),
    /// Make a node signing key: writes FILE (PKCS#8 PEM, owner-only) and
    /// FILE.pub, and prints the public key, to list in other nodes' --trust.
    Keygen(KeygenArgs),
    /// Create a plugin folder (Rust, Python, JavaScript or C) that builds
    /// and answers `NAME.hello` as it is.
    New(author::NewArgs),
    /// Build a plugin folder, whatever its language, into `NAME.wasm`.
    Build(author::BuildArgs),
}

#[derive(Debug, Args)]
struct SettleArgs {
    /// The dispatch's request id (the outcome's `request_id`).
    request_id: String,
    /// `commit` applies the staged writes on every node; `abort` drops them.
    #[arg(value_parser = ["commit", "abort"])]
    decision: String,
    #[command(flatten)]
    node: NodeUrl,
}

#[derive(Debug, Args)]
struct KeygenArgs {
    /// Where to write the private key [default: node.key].
    #[arg(long, short, value_name = "FILE", default_value = "node.key")]
    out: PathBuf,
    /// The node id the public key line names, binding the key to that node
    /// in trust files.
    #[arg(long, value_name = "ID")]
    node_id: Option<String>,
}

#[derive(Debug, Subcommand)]
enum PluginsCommand {
    /// List the plugins of a running node, and the files that failed to load.
    List {
        #[command(flatten)]
        node: NodeUrl,
        /// Print the node's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
        /// Also list the plugins of every live node of the node's mesh
        /// (distributed mode), as the mesh's registry says.
        #[arg(long)]
        all: bool,
    },
    /// Load one component and print its name, version and topics; fails with
    /// the reason when the file is not a worker plugin.
    Check {
        /// The `.wasm` file.
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// A TOML file with any of: plugins, http, node_id, nats, redis,
    /// liveness, key, data_dir, trust (a list), trust_mesh, memory_limit_mib,
    /// call_timeout, max_instances, warm_instances, max_depth, nested_margin, stage_expiry,
    /// store_retention. Flags and ANOCAST_* variables override it.
    #[arg(long, env = "ANOCAST_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// The plugins folder: every `.wasm` in it is loaded.
    #[arg(long, env = "ANOCAST_PLUGINS", value_name = "DIR")]
    plugins: Option<PathBuf>,
    /// Address of the HTTP API [default: 127.0.0.1:7700].
    #[arg(long, env = "ANOCAST_HTTP", value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// This node's id, as it appears in worker names [default: host name].
    #[arg(long, env = "ANOCAST_NODE_ID", value_name = "ID")]
    node_id: Option<String>,
    /// Do not watch the plugins folder. By default adding,
    /// replacing, renaming or removing a .wasm there takes effect at once,
    /// without losing a dispatch; a broken file never replaces a working
    /// version.
    #[arg(long, env = "ANOCAST_NO_WATCH")]
    no_watch: bool,
    /// How long a changed file must be quiet before it is loaded.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "50ms")]
    reload_debounce: Duration,
    #[command(flatten)]
    mesh: MeshArgs,
    #[command(flatten)]
    limits: LimitArgs,
}

/// Distributed mode: both servers, or neither (embedded mode).
#[derive(Debug, Args)]
struct MeshArgs {
    /// Join a mesh over this NATS server (distributed mode; needs --redis).
    #[arg(long, env = "ANOCAST_NATS", value_name = "URL")]
    nats: Option<String>,
    /// The mesh's Redis, holding interest lists and node registrations
    /// (needs --nats).
    #[arg(long, env = "ANOCAST_REDIS", value_name = "URL")]
    redis: Option<String>,
    /// How long a node's registration lives without a heartbeat: a worker
    /// whose node died is reported missing about this long after [default: 3s].
    #[arg(long, env = "ANOCAST_LIVENESS", value_name = "DURATION", value_parser = parse_duration)]
    liveness: Option<Duration>,
    /// This node's private signing key (PKCS#8 PEM, owner-only)
    /// [default: node.key in the data folder, made on first start].
    #[arg(long, env = "ANOCAST_KEY", value_name = "FILE")]
    key: Option<PathBuf>,
    /// The node's data folder: its compiled-code cache and (distributed
    /// mode) its key [default: $XDG_DATA_HOME/anocast/<node-id> or
    /// ~/.local/share/anocast/<node-id>].
    #[arg(long, env = "ANOCAST_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    trust: TrustArgs,
}

/// Whose replies a dispatcher accepts in distributed mode.
#[derive(Debug, Args)]
struct TrustArgs {
    /// Trusted public keys: a file, or a folder of files, of lines
    /// `ed25519:<hex> [node-id]` (repeatable). Distributed mode needs this or
    /// --trust-mesh.
    #[arg(long, value_name = "PATH")]
    trust: Vec<PathBuf>,
    /// Development only: trust every node registered in this mesh's Redis.
    #[arg(long, env = "ANOCAST_TRUST_MESH")]
    trust_mesh: bool,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The plugins folder: every `.wasm` in it is loaded.
    #[arg(long, env = "ANOCAST_PLUGINS", value_name = "DIR")]
    plugins: PathBuf,
    /// Where compiled code is cached (in DIR/cache), so that the next run
    /// does not compile the same components again [default:
    /// $XDG_DATA_HOME/anocast/local or ~/.local/share/anocast/local].
    #[arg(long, env = "ANOCAST_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    task: TaskArgs,
    #[command(flatten)]
    limits: LimitArgs,
}

#[derive(Debug, Args)]
struct DispatchArgs {
    #[command(flatten)]
    task: TaskArgs,
    #[command(flatten)]
    node: NodeUrl,
    /// Dispatch straight into a mesh as a plugin-less client, instead of
    /// through a node's HTTP API (needs --redis).
    #[arg(long, env = "ANOCAST_NATS", value_name = "URL", requires = "redis")]
    nats: Option<String>,
    /// The mesh's Redis (with --nats).
    #[arg(long, env = "ANOCAST_REDIS", value_name = "URL", requires = "nats")]
    redis: Option<String>,
    #[command(flatten)]
    trust: TrustArgs,
}

#[derive(Debug, Args)]
struct NodeUrl {
    /// URL of a running node's HTTP API.
    #[arg(long, env = "ANOCAST_URL", value_name = "URL", default_value = "http://127.0.0.1:7700")]
    url: String,
}

#[derive(Debug, Args)]
struct TaskArgs {
    /// The task's topic, e.g. `orders.created`.
    topic: String,
    /// The payload: literal text, `@FILE` to read a file, or `-` for stdin.
    /// Empty when left out.
    payload: Option<String>,
    /// Overall deadline: past it the outcome is `timed_out`.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    /// Interest window: nobody declared by then means `no_interest`.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = parse_duration)]
    grace: Duration,
    /// MIME type of the payload (default: application/json when it parses as
    /// JSON, text/plain for other text, application/octet-stream otherwise).
    #[arg(long, value_name = "TYPE")]
    content_type: Option<String>,
    /// What to do with the writes the workers staged, once the outcome is
    /// known: all-ok (commit when every partial is ok, else abort), commit,
    /// abort, or manual (leave them for `anocast settle`, or to expire).
    #[arg(long, value_name = "POLICY", default_value = "all-ok", value_parser = SettlePolicy::parse)]
    settle: SettlePolicy,
}

#[derive(Debug, Args)]
struct LimitArgs {
    /// Memory limit of one plugin instance, in MiB [default: 64].
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=4096))]
    memory_limit: Option<u64>,
    /// Longest a single call into a plugin may run [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    call_timeout: Option<Duration>,
    /// Plugin instances alive at once; tasks beyond wait for a slot [default: 1000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_instances: Option<u32>,
    /// Idle warm instances kept for each plugin that declares itself
    /// stateless, so that its next tasks skip instantiation; 0 gives every
    /// task a fresh instance. Under load, set it near the number of tasks
    /// of one plugin the node runs at once [default: 4].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=1000))]
    warm_instances: Option<u32>,
    /// Deepest sub-task a worker may dispatch (a task from outside is at
    /// depth 0); deeper ones are refused at once [default: 8].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=64))]
    max_depth: Option<u32>,
    /// How much sooner than its parent's a sub-task's deadline falls, to
    /// leave the parent time to reply [default: 50ms].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    nested_margin: Option<Duration>,
    /// How long writes a worker staged wait for their commit or abort after
    /// their task's deadline, before they are dropped [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    stage_expiry: Option<Duration>,
    /// Distributed mode: how long a committed value stays in Redis after
    /// its last write [default: 7days].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    store_retention: Option<Duration>,
}

impl LimitArgs {
    fn runtime(&self, file: &config::FileConfig) -> anyhow::Result<RuntimeConfig> {
        let defaults = RuntimeConfig::default();
        Ok(RuntimeConfig {
            memory_limit: self.memory_limit.or(file.memory_limit_mib).map_or(defaults.memory_limit, |mib| mib << 20),
            call_timeout: match self.call_timeout {
                Some(d) => d,
                None => file.duration("call_timeout", file.call_timeout.as_deref())?.unwrap_or(defaults.call_timeout),
            },
            max_instances: self.max_instances.or(file.max_instances).unwrap_or(defaults.max_instances),
            warm_instances: self.warm_instances.or(file.warm_instances).map_or(defaults.warm_instances, |n| n as usize),
            ..defaults
        })
    }

    fn settle(&self, file: &config::FileConfig) -> anyhow::Result<SettleConfig> {
        let defaults = SettleConfig::default();
        let pick = |flag: Option<Duration>, key: &str, value: Option<&str>, default: Duration| match flag {
            Some(d) => Ok(d),
            None => file.duration(key, value).map(|d| d.unwrap_or(default)),
        };
        Ok(SettleConfig {
            expiry: pick(self.stage_expiry, "stage_expiry", file.stage_expiry.as_deref(), defaults.expiry)?,
            retention: pick(
                self.store_retention,
                "store_retention",
                file.store_retention.as_deref(),
                defaults.retention,
            )?,
            ..defaults
        })
    }

    fn nesting(&self, file: &config::FileConfig) -> anyhow::Result<NestingConfig> {
        let defaults = NestingConfig::default();
        Ok(NestingConfig {
            max_depth: self.max_depth.or(file.max_depth).unwrap_or(defaults.max_depth),
            margin: match self.nested_margin {
                Some(d) => d,
                None => file.duration("nested_margin", file.nested_margin.as_deref())?.unwrap_or(defaults.margin),
            },
        })
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration =
        humantime::parse_duration(text).map_err(|e| format!("{e}; expected a duration such as 500ms, 2s or 1m"))?;
    if duration.is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(duration)
}

/// Entry point of the `anocast` binary: parses arguments, runs the command,
/// reports an error as one line on stderr, and returns the exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Serve(_)) { "info" } else { "warn" };
    init_tracing(default_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => return fail(anyhow::Error::from(err).context("cannot start the async runtime")),
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => fail(err),
    }
}

fn fail(err: anyhow::Error) -> ExitCode {
    let mut line = format!("error: {err}");
    for cause in err.chain().skip(1) {
        line.push_str(&format!(": {cause}"));
    }
    eprintln!("{}", line.replace('\n', " "));
    ExitCode::FAILURE
}

fn init_tracing(default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("ANOCAST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new(default_level));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Runs a parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve(args).await.map(|()| ExitCode::SUCCESS),
        Command::Run(args) => run_once(args).await,
        Command::Dispatch(args) => {
            let (topic, payload, options) = args.task.resolve()?;
            let outcome = match mesh_config(args.nats.clone(), args.redis.clone(), None)? {
                Some(mut mesh) => {
                    mesh.trust = args.trust.trust.clone();
                    mesh.trust_mesh = args.trust.trust_mesh;
                    let host = start_host(HostConfig {
                        plugins: None,
                        node_id: format!("client-{}", std::process::id()),
                        runtime: RuntimeConfig { max_instances: 1, ..RuntimeConfig::default() },
                        mesh: Some(mesh),
                        nesting: NestingConfig::default(),
                        settle: SettleConfig::default(),
                    })
                    .await?;
                    let outcome = host.dispatcher().dispatch(topic, payload, &options).await?;
                    serde_json::from_str(&outcome.to_json())?
                }
                None => client::Client::new(&args.node.url)?.dispatch(&topic, payload, &options).await?,
            };
            println!("{}", serde_json::to_string_pretty(&outcome)?);
            Ok(exit_for(outcome["status"].as_str()))
        }
        Command::Plugins(PluginsCommand::List { node, json, all }) => {
            let answer = client::Client::new(&node.url)?.plugins().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                print!("{}", client::plugins_table(&answer));
                if all {
                    print!("{}", client::mesh_table(&answer));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugins(PluginsCommand::Check { file }) => check(&file).await.map(|()| ExitCode::SUCCESS),
        Command::New(args) => author::new(args).map(|()| ExitCode::SUCCESS),
        Command::Build(args) => {
            tokio::task::spawn_blocking(move || author::build(args)).await?.map(|()| ExitCode::SUCCESS)
        }
        Command::Settle(args) => {
            let decision = Decision::parse(&args.decision).context("the decision must be commit or abort")?;
            let answer = client::Client::new(&args.node.url)?.settle(&args.request_id, decision).await?;
            println!("{}", serde_json::to_string_pretty(&answer)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Keygen(args) => {
            if let Some(id) = &args.node_id {
                anocast_wire::names::check_node_id(id)?;
            }
            let key = anocast_wire::NodeKey::generate()?;
            crate::trust::write_key(&args.out, &key, args.node_id.as_deref())?;
            eprintln!(
                "wrote {} (keep it private) and {}",
                args.out.display(),
                crate::trust::public_key_path(&args.out).display()
            );
            match &args.node_id {
                Some(id) => println!("{} {id}", key.public()),
                None => println!("{}", key.public()),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn exit_for(status: Option<&str>) -> ExitCode {
    match status {
        Some(s) if s == Status::Complete.as_str() => ExitCode::SUCCESS,
        Some(s) if s == Status::NoInterest.as_str() => ExitCode::from(3),
        Some(s) if s == Status::TimedOut.as_str() => ExitCode::from(4),
        Some(s) if s == Status::Incomplete.as_str() => ExitCode::from(5),
        _ => ExitCode::FAILURE,
    }
}

impl TaskArgs {
    /// Validates the topic, reads the payload and builds the options.
    fn resolve(&self) -> anyhow::Result<(Topic, Vec<u8>, DispatchOptions)> {
        let topic = Topic::parse(&self.topic)?;
        let payload = match self.payload.as_deref() {
            None => Vec::new(),
            Some("-") => {
                let mut bytes = Vec::new();
                std::io::stdin().read_to_end(&mut bytes).context("cannot read the payload from stdin")?;
                bytes
            }
            Some(arg) => match arg.strip_prefix('@') {
                Some(file) => std::fs::read(file).with_context(|| format!("cannot read payload file {file}"))?,
                None => arg.as_bytes().to_vec(),
            },
        };
        let content_type = self.content_type.clone().unwrap_or_else(|| guess_content_type(&payload).to_owned());
        anyhow::ensure!(
            self.timeout <= crate::dispatch::MAX_TIMEOUT,
            "--timeout may be at most {}",
            humantime::format_duration(crate::dispatch::MAX_TIMEOUT)
        );
        Ok((
            topic,
            payload,
            DispatchOptions { grace: self.grace, timeout: self.timeout, content_type, settle: self.settle },
        ))
    }
}

fn guess_content_type(payload: &[u8]) -> &'static str {
    if !payload.is_empty() && serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok() {
        "application/json"
    } else if std::str::from_utf8(payload).is_ok() {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    }
}

async fn start_host(config: HostConfig) -> anyhow::Result<Host> {
    let dir = config.plugins.clone();
    let host = Host::start(config).await?;
    for failure in &host.plugins().failed {
        eprintln!("warning: {}: {}", failure.file.display(), failure.error);
    }
    if let Some(dir) = dir
        && host.plugins().loaded.is_empty()
    {
        eprintln!("warning: no plugin loaded from {}", dir.display());
    }
    Ok(host)
}

fn mesh_config(
    nats: Option<String>,
    redis: Option<String>,
    liveness: Option<Duration>,
) -> anyhow::Result<Option<MeshConfig>> {
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

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => config::FileConfig::load(path)?,
        None => config::FileConfig::default(),
    };
    let plugins = args
        .plugins
        .clone()
        .or_else(|| file.plugins.clone())
        .context("no plugins folder: give --plugins DIR (or `plugins` in the config file)")?;
    let http = match args.http {
        Some(http) => http,
        None => file.http()?.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7700))),
    };
    let liveness = match args.mesh.liveness {
        Some(d) => Some(d),
        None => file.duration("liveness", file.liveness.as_deref())?,
    };
    let mut mesh = mesh_config(
        args.mesh.nats.clone().or(file.nats.clone()),
        args.mesh.redis.clone().or(file.redis.clone()),
        liveness,
    )?;
    if let Some(mesh) = &mut mesh {
        mesh.key = args.mesh.key.clone().or(file.key.clone());
        mesh.data_dir = args.mesh.data_dir.clone().or(file.data_dir.clone());
        mesh.trust = if args.mesh.trust.trust.is_empty() { file.trust.clone() } else { args.mesh.trust.trust.clone() };
        mesh.trust_mesh = args.mesh.trust.trust_mesh || file.trust_mesh.unwrap_or(false);
    }
    let node_id = args.node_id.clone().or(file.node_id.clone()).unwrap_or_else(crate::default_node_id);
    anocast_wire::names::check_node_id(&node_id)?;
    let data_dir = args
        .mesh
        .data_dir
        .clone()
        .or(file.data_dir.clone())
        .unwrap_or_else(|| crate::trust::default_data_dir(&node_id));
    let mut runtime = args.limits.runtime(&file)?;
    runtime.cache_dir = Some(data_dir.join("cache"));
    let nesting = args.limits.nesting(&file)?;
    let settle = args.limits.settle(&file)?;
    let config = HostConfig { plugins: Some(plugins), node_id, runtime, mesh, nesting, settle };
    let listener =
        tokio::net::TcpListener::bind(http).await.with_context(|| format!("cannot listen on {http} (--http)"))?;
    let host = Arc::new(start_host(config).await?);
    let address = listener.local_addr()?;
    let _watch = if args.no_watch { None } else { host.watch_plugins(args.reload_debounce)? };
    tracing::info!(
        node = host.node_id(),
        plugins = host.plugins().loaded.len(),
        mode = if host.is_distributed() { "distributed" } else { "embedded" },
        "serving the HTTP API on http://{address}"
    );
    crate::gateway::serve(listener, host.clone(), shutdown_signal()).await.context("the HTTP server failed")?;
    if let Ok(host) = Arc::try_unwrap(host) {
        host.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
    tracing::info!("shutting down");
}

async fn run_once(args: RunArgs) -> anyhow::Result<ExitCode> {
    let (topic, payload, options) = args.task.resolve()?;
    let mut runtime = args.limits.runtime(&config::FileConfig::default())?;
    let data_dir = args.data_dir.clone().unwrap_or_else(|| crate::trust::default_data_dir("local"));
    runtime.cache_dir = Some(data_dir.join("cache"));
    let host = start_host(HostConfig {
        plugins: Some(args.plugins.clone()),
        node_id: "local".into(),
        runtime,
        mesh: None,
        nesting: args.limits.nesting(&config::FileConfig::default())?,
        settle: args.limits.settle(&config::FileConfig::default())?,
    })
    .await?;
    let outcome = host.dispatcher().dispatch(topic, payload, &options).await?;
    let json: serde_json::Value = serde_json::from_str(&outcome.to_json())?;
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(exit_for(Some(outcome.status.as_str())))
}

async fn check(file: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let runtime = Runtime::new(RuntimeConfig { max_instances: 4, ..RuntimeConfig::default() })?;
    let plugin = match runtime.load(bytes).await {
        Ok(plugin) => plugin,
        Err(err) => bail!("{}: {err}", file.display()),
    };
    let topics: Vec<&str> = plugin.info.topics.iter().map(|t| t.as_str()).collect();
    println!("file:    {}", file.display());
    println!("name:    {}", plugin.info.name);
    println!("version: {}", plugin.info.version);
    println!("topics:  {}", topics.join(", "));
    println!("digest:  sha256:{}", plugin.digest);
    println!("size:    {} bytes", plugin.size);
    println!(
        "state:   {}",
        if plugin.stateless {
            "stateless (declared): warm instances serve its tasks"
        } else {
            "a fresh instance per task"
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn content_types_are_guessed_from_the_payload() {
        assert_eq!(guess_content_type(br#"{"a": 1}"#), "application/json");
        assert_eq!(guess_content_type(b"hello"), "text/plain; charset=utf-8");
        assert_eq!(guess_content_type(&[0xff, 0x00]), "application/octet-stream");
    }

    #[test]
    fn task_flags_default_to_the_dispatchers_defaults() {
        let Cli { command: Command::Dispatch(args), .. } = Cli::parse_from(["anocast", "dispatch", "a.b"]) else {
            panic!("not a dispatch")
        };
        let defaults = DispatchOptions::default();
        assert_eq!(args.task.timeout, defaults.timeout);
        assert_eq!(args.task.grace, defaults.grace);
        assert_eq!(args.task.settle, defaults.settle);
    }

    #[test]
    fn durations_need_a_unit_and_must_be_positive() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("0s").is_err());
    }
}
