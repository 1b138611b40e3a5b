//! anocast-cli: the `anocast` command, over the `anocast` library.
//!
//! Output conventions: results (outcome JSON, plugin lists) go to stdout;
//! logs and errors go to stderr, an error as one line `error: ...`.
//!
//! Exit status: 0 success (a dispatch that completed); 1 an error; 2 bad
//! usage; 3 a dispatch that ended `no_interest`; 4 one that ended
//! `timed_out`; 5 one that ended `incomplete`.
//!
//! # Layout
//!
//! - `args`: clap's definitions of every command and flag;
//! - `settings`: the one layered merge of flags (and their `ANOCAST_*`
//!   variables), the configuration file (`config`) and the library's
//!   defaults into a host's configuration;
//! - `commands`: one module per command;
//! - `client`: the HTTP client of a running node.
//!
//! The CLI is a crate of its own so that the library carries none of what
//! only the command needs: clap, the HTTP client, the TOML file, and the
//! plugin build tools of `anocast new` and `anocast build`.

mod args;
mod client;
mod commands;
mod config;
mod settings;

use std::process::ExitCode;

use anocast::{Host, HostConfig, Status};
use clap::FromArgMatches;

pub use args::Cli;
use args::{Command, PluginsCommand};
use commands::{author, dispatch, keygen, plugins, run, serve, settle};

/// Entry point of the `anocast` binary: parses arguments, runs the command,
/// reports an error as one line on stderr, and returns the exit status.
pub fn main() -> ExitCode {
    let cli = match Cli::from_arg_matches(&args::command().get_matches()) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
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
    let ok = |()| ExitCode::SUCCESS;
    match cli.command {
        Command::Serve(args) => serve::serve(*args).await.map(ok),
        Command::Run(args) => run::run(args).await,
        Command::Dispatch(args) => dispatch::dispatch(*args).await,
        Command::Plugins(PluginsCommand::List { node, json, all }) => plugins::list(&node, json, all).await.map(ok),
        Command::Plugins(PluginsCommand::Check { file }) => plugins::check(&file).await.map(ok),
        Command::New(args) => author::new(args).map(ok),
        Command::Build(args) => tokio::task::spawn_blocking(move || author::build(args)).await?.map(ok),
        Command::Settle(args) => settle::settle(args).await.map(ok),
        Command::Keygen(args) => keygen::keygen(args).map(ok),
    }
}

/// The exit status for a dispatch's outcome status.
pub(crate) fn exit_for(status: Option<&str>) -> ExitCode {
    match status {
        Some(s) if s == Status::Complete.as_str() => ExitCode::SUCCESS,
        Some(s) if s == Status::NoInterest.as_str() => ExitCode::from(3),
        Some(s) if s == Status::TimedOut.as_str() => ExitCode::from(4),
        Some(s) if s == Status::Incomplete.as_str() => ExitCode::from(5),
        Some(s) if s == Status::Overloaded.as_str() => ExitCode::from(6),
        Some(s) if s == Status::Unauthorized.as_str() => ExitCode::from(7),
        _ => ExitCode::FAILURE,
    }
}

/// Starts a host, warning on stderr of plugin files that failed to load.
pub(crate) async fn start_host(config: HostConfig) -> anyhow::Result<Host> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{guess_content_type, parse_duration};
    use anocast::DispatchOptions;
    use clap::Parser;
    use std::time::Duration;

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn help_shows_the_library_defaults() {
        let mut serve = args::command().find_subcommand("serve").expect("serve").clone();
        // Unwrapped, so that a default at the end of a line is found.
        let help = serve.render_long_help().to_string().split_whitespace().collect::<Vec<_>>().join(" ");
        for needle in ["in MiB [default: 64]", "[default: 10s]", "[default: 1000]", "[default: 7days]", "[default: 3s]"]
        {
            assert!(help.contains(needle), "serve --help lacks {needle}: {help}");
        }
        assert!(help.contains("[default: 127.0.0.1:7700]"), "{help}");
        let mut dispatch = args::command().find_subcommand("dispatch").expect("dispatch").clone();
        let help = dispatch.render_long_help().to_string().split_whitespace().collect::<Vec<_>>().join(" ");
        for needle in ["[default: 30s]", "[default: 500ms]", "[default: all-ok]"] {
            assert!(help.contains(needle), "dispatch --help lacks {needle}: {help}");
        }
        args::command().debug_assert();
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
        let (_, _, options) = args.task.resolve().expect("resolved");
        let defaults = DispatchOptions::default();
        assert_eq!(options.timeout, defaults.timeout);
        assert_eq!(options.grace, defaults.grace);
        assert_eq!(options.settle, defaults.settle);
    }

    #[test]
    fn durations_need_a_unit_and_must_be_positive() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("0s").is_err());
    }
}
