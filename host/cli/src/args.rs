//! The command line: clap's definitions of every command and flag, and
//! what the flags of a task resolve to.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anocast::Topic;
use anocast::dispatch::{DispatchOptions, MAX_TIMEOUT, NestingConfig};
use anocast::ledger::Liveness;
use anocast::runtime::RuntimeConfig;
use anocast::settle::SettleConfig;
use anocast::settle::SettlePolicy;
use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand};

const AFTER_HELP: &str = "\
Exit status: 0 success (for a dispatch: it completed), 1 error, 2 bad usage,
3 the dispatch ended no_interest, 4 it ended timed_out, 5 it ended incomplete
(a declared worker's node died), 6 it ended overloaded (nobody declared and
some nodes were too busy to ask their plugins: retry later), 7 it ended
unauthorized (nobody declared and some nodes do not trust this dispatcher's
key: add it to their trust files with role dispatch).

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
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a node: load the plugins folder and serve the HTTP API.
    Serve(Box<ServeArgs>),
    /// Dispatch a task through a running node and print the outcome JSON.
    Dispatch(Box<DispatchArgs>),
    /// Load a plugins folder, dispatch one task in-process, print the outcome
    /// JSON and exit (no server needed).
    Run(RunArgs),
    /// List or check plugins.
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// Commit or abort the writes the workers of a dispatch staged (for a
    /// dispatch made with --settle manual), through the node that made the
    /// dispatch (nodes apply only its signed decision).
    Settle(SettleArgs),
    /// Make a signing key for a node or a plugin-less client: writes FILE
    /// (PKCS#8 PEM, owner-only) and FILE.pub, and prints its trust line
    /// (`<key> <node-id> <roles>`), to list in other nodes' --trust.
    Keygen(KeygenArgs),
    /// Create a plugin folder (Rust, Python, JavaScript or C) that builds
    /// and answers `NAME.hello` as it is.
    New(crate::commands::author::NewArgs),
    /// Build a plugin folder, whatever its language, into `NAME.wasm`.
    Build(crate::commands::author::BuildArgs),
}

#[derive(Debug, Args)]
pub(crate) struct SettleArgs {
    /// The dispatch's request id (the outcome's `request_id`).
    pub(crate) request_id: String,
    /// `commit` applies the staged writes on every node; `abort` drops them.
    #[arg(value_parser = ["commit", "abort"])]
    pub(crate) decision: String,
    #[command(flatten)]
    pub(crate) node: NodeUrl,
}

#[derive(Debug, Args)]
pub(crate) struct KeygenArgs {
    /// Where to write the private key [default: node.key].
    #[arg(long, short, value_name = "FILE", default_value = "node.key")]
    pub(crate) out: PathBuf,
    /// The node id the public key line names, binding the key to that node
    /// in trust files.
    #[arg(long, value_name = "ID")]
    pub(crate) node_id: Option<String>,
    /// What the public key line trusts the key for: `reply,dispatch` for a
    /// node (it answers tasks and dispatches sub-tasks), `dispatch` for a
    /// plugin-less client, `reply` for a node that must not dispatch.
    #[arg(long, value_name = "ROLES", default_value = anocast::trust::NODE_ROLES,
          value_parser = ["reply,dispatch", "dispatch,reply", "dispatch", "reply"])]
    pub(crate) roles: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PluginsCommand {
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
pub(crate) struct ServeArgs {
    /// A TOML file with any of: plugins, http, node_id, nats, redis,
    /// nats_user, nats_password, nats_token, nats_nkey, nats_creds,
    /// nats_tls_ca, nats_tls_cert, nats_tls_key, redis_user,
    /// redis_password, redis_tls_ca, redis_tls_cert, redis_tls_key,
    /// api_token_file, allowed_hosts, cors_origins, http_header_timeout,
    /// http_body_timeout, http_request_timeout, http_max_connections,
    /// http_max_concurrent,
    /// liveness, max_tasks, key, data_dir, trust (a list), trust_mesh, memory_limit_mib, memory_budget_mib,
    /// call_timeout, max_instances, warm_instances, max_depth, nested_margin, stage_expiry,
    /// store_retention. Flags and ANOCAST_* variables override it.
    #[arg(long, env = "ANOCAST_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// The plugins folder: every `.wasm` in it is loaded.
    #[arg(long, env = "ANOCAST_PLUGINS", value_name = "DIR")]
    pub(crate) plugins: Option<PathBuf>,
    /// Address of the HTTP API.
    #[arg(long, env = "ANOCAST_HTTP", value_name = "ADDR")]
    pub(crate) http: Option<SocketAddr>,
    /// This node's id, as it appears in worker names [default: host name].
    #[arg(long, env = "ANOCAST_NODE_ID", value_name = "ID")]
    pub(crate) node_id: Option<String>,
    /// Do not watch the plugins folder. By default adding,
    /// replacing, renaming or removing a .wasm there takes effect at once,
    /// without losing a dispatch; a broken file never replaces a working
    /// version.
    #[arg(long, env = "ANOCAST_NO_WATCH")]
    pub(crate) no_watch: bool,
    /// How long a changed file must be quiet before it is loaded.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) reload_debounce: Option<Duration>,
    #[command(flatten)]
    pub(crate) http_api: HttpArgs,
    #[command(flatten)]
    pub(crate) mesh: MeshArgs,
    #[command(flatten)]
    pub(crate) limits: LimitArgs,
}

/// Distributed mode: both servers, or neither (embedded mode).
#[derive(Debug, Args)]
pub(crate) struct MeshArgs {
    /// Join a mesh over this NATS server (distributed mode; needs --redis):
    /// nats://host:port, tls://host:port to require TLS, several separated
    /// by commas; nats://user:password@host or nats://token@host to
    /// authenticate.
    #[arg(long, env = "ANOCAST_NATS", value_name = "URL", hide_env_values = true)]
    pub(crate) nats: Option<String>,
    /// The mesh's Redis, holding interest lists and node registrations
    /// (needs --nats): redis://[user:password@]host:port, or rediss:// for
    /// TLS.
    #[arg(long, env = "ANOCAST_REDIS", value_name = "URL", hide_env_values = true)]
    pub(crate) redis: Option<String>,
    /// How long a node's registration lives without a heartbeat: a worker
    /// whose node died is reported missing about this long after.
    #[arg(long, env = "ANOCAST_LIVENESS", value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) liveness: Option<Duration>,
    /// This node's private signing key (PKCS#8 PEM, owner-only)
    /// [default: node.key in the data folder, made on first start].
    #[arg(long, env = "ANOCAST_KEY", value_name = "FILE")]
    pub(crate) key: Option<PathBuf>,
    /// The node's data folder: its compiled-code cache and (distributed
    /// mode) its key [default: $XDG_DATA_HOME/anocast/<node-id> or
    /// ~/.local/share/anocast/<node-id>].
    #[arg(long, env = "ANOCAST_DATA_DIR", value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Most tasks from the mesh this node runs (or waits to run) at once;
    /// more are answered `busy` at once, and a dispatch that only met busy
    /// nodes ends `overloaded`.
    #[arg(long, env = "ANOCAST_MAX_TASKS", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) max_tasks: Option<u32>,
    #[command(flatten)]
    pub(crate) trust: TrustArgs,
    #[command(flatten)]
    pub(crate) auth: AuthArgs,
}

/// How to authenticate to NATS and Redis. Secrets are best given by
/// variable or file: other users of a machine can read a process's flags.
/// No error, log line or help text shows them.
#[derive(Debug, Args)]
#[command(next_help_heading = "Connecting to NATS and Redis")]
pub(crate) struct AuthArgs {
    /// NATS user name, with --nats-password (or nats://user:password@host).
    #[arg(long, env = "ANOCAST_NATS_USER", value_name = "NAME")]
    pub(crate) nats_user: Option<String>,
    /// NATS password of --nats-user.
    #[arg(long, env = "ANOCAST_NATS_PASSWORD", value_name = "PASSWORD", hide_env_values = true)]
    pub(crate) nats_password: Option<String>,
    /// NATS authorization token (or nats://token@host).
    #[arg(long, env = "ANOCAST_NATS_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub(crate) nats_token: Option<String>,
    /// A file holding the NATS user's nkey seed (a line starting with SU).
    #[arg(long, env = "ANOCAST_NATS_NKEY", value_name = "FILE")]
    pub(crate) nats_nkey: Option<PathBuf>,
    /// A NATS credentials file (.creds: a user JWT and its nkey seed).
    #[arg(long, env = "ANOCAST_NATS_CREDS", value_name = "FILE")]
    pub(crate) nats_creds: Option<PathBuf>,
    /// CA certificates (PEM) the NATS server's certificate must chain to;
    /// any --nats-tls-* flag requires TLS [default: the system's roots].
    #[arg(long, env = "ANOCAST_NATS_TLS_CA", value_name = "FILE")]
    pub(crate) nats_tls_ca: Option<PathBuf>,
    /// This node's client certificate (PEM) for NATS servers that verify
    /// clients, with --nats-tls-key.
    #[arg(long, env = "ANOCAST_NATS_TLS_CERT", value_name = "FILE")]
    pub(crate) nats_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --nats-tls-cert.
    #[arg(long, env = "ANOCAST_NATS_TLS_KEY", value_name = "FILE")]
    pub(crate) nats_tls_key: Option<PathBuf>,
    /// Redis ACL user (overrides the URL's).
    #[arg(long, env = "ANOCAST_REDIS_USER", value_name = "NAME")]
    pub(crate) redis_user: Option<String>,
    /// Redis password (overrides the URL's).
    #[arg(long, env = "ANOCAST_REDIS_PASSWORD", value_name = "PASSWORD", hide_env_values = true)]
    pub(crate) redis_password: Option<String>,
    /// CA certificates (PEM) the Redis server's certificate must chain to
    /// (needs a rediss:// URL) [default: the system's roots].
    #[arg(long, env = "ANOCAST_REDIS_TLS_CA", value_name = "FILE")]
    pub(crate) redis_tls_ca: Option<PathBuf>,
    /// This node's client certificate (PEM) for a Redis that verifies
    /// clients, with --redis-tls-key.
    #[arg(long, env = "ANOCAST_REDIS_TLS_CERT", value_name = "FILE")]
    pub(crate) redis_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --redis-tls-cert.
    #[arg(long, env = "ANOCAST_REDIS_TLS_KEY", value_name = "FILE")]
    pub(crate) redis_tls_key: Option<PathBuf>,
}

/// Whose replies a dispatcher accepts in distributed mode.
#[derive(Debug, Args)]
pub(crate) struct TrustArgs {
    /// Trusted public keys: a file, or a folder of files, of lines
    /// `ed25519:<hex> <node-id> <roles>` (`*` for any node id; roles
    /// `reply`, `dispatch` or `reply,dispatch`; repeatable). Distributed
    /// mode needs this or --trust-mesh.
    #[arg(long, value_name = "PATH")]
    pub(crate) trust: Vec<PathBuf>,
    /// Development only: trust every node that signs its own entry in this
    /// mesh's Redis, to reply and to dispatch (a plugin-less client, which
    /// registers nothing, still needs a trust line).
    #[arg(long, env = "ANOCAST_TRUST_MESH")]
    pub(crate) trust_mesh: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The plugins folder: every `.wasm` in it is loaded.
    #[arg(long, env = "ANOCAST_PLUGINS", value_name = "DIR")]
    pub(crate) plugins: PathBuf,
    /// Where compiled code is cached (in DIR/cache), so that the next run
    /// does not compile the same components again [default:
    /// $XDG_DATA_HOME/anocast/local or ~/.local/share/anocast/local].
    #[arg(long, env = "ANOCAST_DATA_DIR", value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) task: TaskArgs,
    #[command(flatten)]
    pub(crate) limits: LimitArgs,
}

#[derive(Debug, Args)]
pub(crate) struct DispatchArgs {
    #[command(flatten)]
    pub(crate) task: TaskArgs,
    #[command(flatten)]
    pub(crate) node: NodeUrl,
    /// Dispatch straight into a mesh as a plugin-less client, instead of
    /// through a node's HTTP API (needs --redis); the URL as for `serve`.
    #[arg(long, env = "ANOCAST_NATS", value_name = "URL", requires = "redis", hide_env_values = true)]
    pub(crate) nats: Option<String>,
    /// The mesh's Redis (with --nats).
    #[arg(long, env = "ANOCAST_REDIS", value_name = "URL", requires = "nats", hide_env_values = true)]
    pub(crate) redis: Option<String>,
    /// With --nats: the key this client signs its tasks and settle
    /// decisions with (nodes run only tasks from keys they trust with role
    /// dispatch; make one with `anocast keygen --node-id ID --roles
    /// dispatch`) [default: made on first use in the data folder of
    /// --client-id].
    #[arg(long, env = "ANOCAST_KEY", value_name = "FILE", requires = "nats")]
    pub(crate) key: Option<PathBuf>,
    /// With --nats: the id this client dispatches as, which the nodes'
    /// trust lines name.
    #[arg(long, env = "ANOCAST_CLIENT_ID", value_name = "ID", default_value = "client")]
    pub(crate) client_id: String,
    #[command(flatten)]
    pub(crate) trust: TrustArgs,
    #[command(flatten)]
    pub(crate) auth: AuthArgs,
}

#[derive(Debug, Args)]
pub(crate) struct NodeUrl {
    /// URL of a running node's HTTP API.
    #[arg(long, env = "ANOCAST_URL", value_name = "URL", default_value = "http://127.0.0.1:7700")]
    pub(crate) url: String,
    /// A file holding the node's API token, sent as `Authorization: Bearer`
    /// (or the token itself in ANOCAST_API_TOKEN).
    #[arg(long, env = "ANOCAST_API_TOKEN_FILE", value_name = "FILE")]
    pub(crate) api_token_file: Option<PathBuf>,
}

impl NodeUrl {
    /// A client of the node, with its token if one is given.
    pub(crate) fn client(&self) -> anyhow::Result<crate::client::Client> {
        let token = crate::settings::api_token(self.api_token_file.as_deref())?;
        crate::client::Client::new(&self.url, token)
    }
}

/// The HTTP API's guards and limits.
#[derive(Debug, Args)]
#[command(next_help_heading = "HTTP API")]
pub(crate) struct HttpArgs {
    /// A file holding the API token (at least 16 characters) that requests
    /// must carry as `Authorization: Bearer <token>`; or the token itself
    /// in ANOCAST_API_TOKEN. Required when --http is not a loopback
    /// address.
    #[arg(long, env = "ANOCAST_API_TOKEN_FILE", value_name = "FILE")]
    pub(crate) api_token_file: Option<PathBuf>,
    /// A DNS name of this node that requests may use in their Host header
    /// (repeatable); IP addresses and localhost always may. Others are
    /// refused, which stops DNS rebinding.
    #[arg(long, value_name = "NAME")]
    pub(crate) allowed_host: Vec<String>,
    /// An origin (https://app.example) whose web pages may call the API
    /// (CORS; repeatable). By default no other origin may.
    #[arg(long, value_name = "ORIGIN")]
    pub(crate) cors_origin: Vec<String>,
    /// Longest wait for a request's headers (and for an idle connection's
    /// next request).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) http_header_timeout: Option<Duration>,
    /// Longest wait for a request's whole body.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) http_body_timeout: Option<Duration>,
    /// Longest a whole request may take; a dispatch's timeout must fit.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) http_request_timeout: Option<Duration>,
    /// Most HTTP connections open at once; more are closed at once.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) http_max_connections: Option<u32>,
    /// Most dispatch and settle requests in flight; more are answered 503
    /// with Retry-After.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) http_max_concurrent: Option<u32>,
}

#[derive(Debug, Args)]
pub(crate) struct TaskArgs {
    /// The task's topic, e.g. `orders.created`.
    pub(crate) topic: String,
    /// The payload: literal text, `@FILE` to read a file, or `-` for stdin.
    /// Empty when left out.
    pub(crate) payload: Option<String>,
    /// Overall deadline: past it the outcome is `timed_out`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) timeout: Option<Duration>,
    /// Interest window: nobody declared by then means `no_interest`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) grace: Option<Duration>,
    /// MIME type of the payload (default: application/json when it parses as
    /// JSON, text/plain for other text, application/octet-stream otherwise).
    #[arg(long, value_name = "TYPE")]
    pub(crate) content_type: Option<String>,
    /// What to do with the writes the workers staged, once the outcome is
    /// known: all-ok (commit when every partial is ok, else abort), commit,
    /// abort, or manual (leave them for `anocast settle`, or to expire).
    #[arg(long, value_name = "POLICY", value_parser = SettlePolicy::parse)]
    pub(crate) settle: Option<SettlePolicy>,
}

#[derive(Debug, Args)]
pub(crate) struct LimitArgs {
    /// Memory limit of one plugin instance, in MiB.
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub(crate) memory_limit: Option<u64>,
    /// Memory all plugin instances may hold together, in MiB (by default
    /// half of this machine's memory); a task whose growth does not fit
    /// fails with an error saying so.
    #[arg(long, env = "ANOCAST_MEMORY_BUDGET", value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) memory_budget: Option<u64>,
    /// Longest a single call into a plugin may run.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) call_timeout: Option<Duration>,
    /// Plugin instances alive at once; tasks beyond wait for a slot.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) max_instances: Option<u32>,
    /// Idle warm instances kept for each plugin that declares itself
    /// stateless, so that its next tasks skip instantiation; 0 gives every
    /// task a fresh instance. Under load, set it near the number of tasks
    /// of one plugin the node runs at once.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub(crate) warm_instances: Option<u32>,
    /// Deepest sub-task a worker may dispatch (a task from outside is at
    /// depth 0); deeper ones are refused at once.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=64))]
    pub(crate) max_depth: Option<u32>,
    /// How much sooner than its parent's a sub-task's deadline falls, to
    /// leave the parent time to reply.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) nested_margin: Option<Duration>,
    /// How long writes a worker staged wait for their commit or abort after
    /// their task's deadline, before they are dropped.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) stage_expiry: Option<Duration>,
    /// Distributed mode: how long a committed value stays in Redis after
    /// its last write.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) store_retention: Option<Duration>,
}

impl TaskArgs {
    /// Validates the topic, reads the payload and builds the options.
    pub(crate) fn resolve(&self) -> anyhow::Result<(Topic, Vec<u8>, DispatchOptions)> {
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
        let defaults = DispatchOptions::default();
        let (timeout, grace) = (self.timeout.unwrap_or(defaults.timeout), self.grace.unwrap_or(defaults.grace));
        anyhow::ensure!(timeout <= MAX_TIMEOUT, "--timeout may be at most {}", humantime::format_duration(MAX_TIMEOUT));
        Ok((
            topic,
            payload,
            DispatchOptions { grace, timeout, content_type, settle: self.settle.unwrap_or(defaults.settle) },
        ))
    }
}

pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration =
        humantime::parse_duration(text).map_err(|e| format!("{e}; expected a duration such as 500ms, 2s or 1m"))?;
    if duration.is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(duration)
}

pub(crate) fn guess_content_type(payload: &[u8]) -> &'static str {
    if !payload.is_empty() && serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok() {
        "application/json"
    } else if std::str::from_utf8(payload).is_ok() {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    }
}

/// The library's defaults of the flags that have none of their own (an
/// unset flag falls back to the config file, then to these), by argument
/// id, as `--help` shows them. Read from the config structs, so that help
/// never says other than what runs.
fn library_defaults() -> Vec<(&'static str, String)> {
    let (runtime, settle, nesting) = (RuntimeConfig::default(), SettleConfig::default(), NestingConfig::default());
    let task = DispatchOptions::default();
    let http = anocast::gateway::GatewayConfig::default();
    let time = |d| humantime::format_duration(d).to_string();
    vec![
        ("http_header_timeout", time(http.header_timeout)),
        ("http_body_timeout", time(http.body_timeout)),
        ("http_request_timeout", time(http.request_timeout)),
        ("http_max_connections", http.max_connections.to_string()),
        ("http_max_concurrent", http.max_concurrent.to_string()),
        ("timeout", time(task.timeout)),
        ("grace", time(task.grace)),
        ("settle", task.settle.as_str().to_owned()),
        ("reload_debounce", time(anocast::DEFAULT_DEBOUNCE)),
        ("http", crate::settings::DEFAULT_HTTP.to_string()),
        ("memory_limit", (runtime.memory_limit >> 20).to_string()),
        ("memory_budget", (runtime.memory_budget >> 20).to_string()),
        ("call_timeout", time(runtime.call_timeout)),
        ("max_instances", runtime.max_instances.to_string()),
        ("warm_instances", runtime.warm_instances.to_string()),
        ("max_depth", nesting.max_depth.to_string()),
        ("nested_margin", time(nesting.margin)),
        ("stage_expiry", time(settle.expiry)),
        ("store_retention", time(settle.retention)),
        ("liveness", time(Liveness::default().ttl)),
        ("max_tasks", anocast::DEFAULT_MAX_TASKS.to_string()),
    ]
}

/// The command line, with the library's defaults written into the help
/// of the flags that fall back to them.
pub(crate) fn command() -> clap::Command {
    let defaults = library_defaults();
    Cli::command().mut_subcommands(|mut sub| {
        for (id, value) in &defaults {
            if sub.get_arguments().any(|a| a.get_id() == id) {
                sub = sub.mut_arg(id, |arg| {
                    let help = arg.get_help().map(|h| format!("{h} [default: {value}]"));
                    let long = arg.get_long_help().map(|h| format!("{h} [default: {value}]"));
                    let arg = match help {
                        Some(help) => arg.help(help),
                        None => arg,
                    };
                    match long {
                        Some(long) => arg.long_help(long),
                        None => arg,
                    }
                });
            }
        }
        sub
    })
}
