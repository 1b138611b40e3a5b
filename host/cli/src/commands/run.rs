//! `anocast run`: load a plugins folder, dispatch one task in-process,
//! print the outcome.

use std::process::ExitCode;

use crate::args::RunArgs;
use crate::settings;

/// Dispatches the task on a host of its own and prints the outcome JSON.
pub(crate) async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let (topic, payload, options) = args.task.resolve()?;
    let host = crate::start_host(settings::run(&args)?).await?;
    let outcome = host.dispatcher().dispatch(topic, payload, &options).await?;
    let json: serde_json::Value = serde_json::from_str(&outcome.to_json())?;
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(crate::exit_for(Some(outcome.status.as_str())))
}
