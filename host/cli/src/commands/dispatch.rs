//! `anocast dispatch`: a task through a running node's HTTP API, or
//! straight into a mesh as a plugin-less client.

use std::process::ExitCode;

use crate::args::DispatchArgs;
use crate::settings;

/// Dispatches the task and prints the outcome JSON.
pub(crate) async fn dispatch(args: DispatchArgs) -> anyhow::Result<ExitCode> {
    let (topic, payload, options) = args.task.resolve()?;
    let outcome = match settings::client(&args)? {
        Some(config) => {
            let host = crate::start_host(config).await?;
            let outcome = host.dispatcher().dispatch(topic, payload, &options).await?;
            // The settle decision must leave before the process does.
            host.shutdown().await;
            serde_json::from_str(&outcome.to_json())?
        }
        None => args.node.client()?.dispatch(&topic, payload, &options).await?,
    };
    println!("{}", serde_json::to_string_pretty(&outcome)?);
    Ok(crate::exit_for(outcome["status"].as_str()))
}
