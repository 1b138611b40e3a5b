//! `anocast serve`: a node serving the HTTP API until Ctrl-C or SIGTERM.

use std::sync::Arc;

use anyhow::Context;

use crate::args::ServeArgs;
use crate::settings;

/// Runs the node until it is told to stop, then leaves the mesh.
pub(crate) async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = settings::serve(&args)?;
    let http = settings.http;
    let listener =
        tokio::net::TcpListener::bind(http).await.with_context(|| format!("cannot listen on {http} (--http)"))?;
    let host = Arc::new(crate::start_host(settings.host).await?);
    let address = listener.local_addr()?;
    let _watch = if args.no_watch {
        None
    } else {
        host.watch_plugins(args.reload_debounce.unwrap_or(anocast::DEFAULT_DEBOUNCE))?
    };
    tracing::info!(
        node = host.node_id(),
        plugins = host.plugins().loaded.len(),
        mode = if host.is_distributed() { "distributed" } else { "embedded" },
        "serving the HTTP API on http://{address}"
    );
    let stats = Arc::new(anocast::gateway::HttpStats::default());
    anocast::gateway::serve(listener, host.clone(), settings.gateway, stats, shutdown_signal())
        .await
        .context("the HTTP server failed")?;
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
