//! `anocast plugins list` and `anocast plugins check`.

use std::path::Path;

use anocast::runtime::{Runtime, RuntimeConfig};
use anyhow::{Context, bail};

use crate::client;

/// Prints a running node's plugins (and, with `all`, the mesh's).
pub(crate) async fn list(node: &crate::args::NodeUrl, json: bool, all: bool) -> anyhow::Result<()> {
    let answer = node.client()?.plugins().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print!("{}", client::plugins_table(&answer));
        if all {
            print!("{}", client::mesh_table(&answer));
        }
    }
    Ok(())
}

/// Loads one component and prints what it is, or why it is not a plugin.
pub(crate) async fn check(file: &Path) -> anyhow::Result<()> {
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
