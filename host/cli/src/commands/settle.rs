//! `anocast settle`: commit or abort a dispatch's staged writes through a
//! running node.

use anocast::Decision;
use anyhow::Context;

use crate::args::SettleArgs;

/// Sends the decision and prints the node's answer.
pub(crate) async fn settle(args: SettleArgs) -> anyhow::Result<()> {
    let decision = Decision::parse(&args.decision).context("the decision must be commit or abort")?;
    let answer = args.node.client()?.settle(&args.request_id, decision).await?;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}
