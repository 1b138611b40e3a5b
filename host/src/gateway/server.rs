//! The HTTP server under the API: it accepts connections up to a cap,
//! closes those that do not send their request headers in time, and on
//! shutdown lets the requests in flight finish.
//!
//! HTTP/1.1 only: the API needs nothing of HTTP/2, and serving one protocol
//! leaves no unguarded read (detecting the protocol would read the first
//! bytes with no timeout).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;

/// Longest shutdown waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(30);

/// Counts of the server's refusals, for `/v1/plugins`.
#[derive(Debug, Default, serde::Serialize)]
pub struct HttpStats {
    /// Connections closed at once because the cap was reached.
    pub connections_refused: AtomicU64,
    /// Requests answered 503 because the node was saturated.
    pub saturated: AtomicU64,
    /// Requests refused for a missing or wrong token.
    pub unauthorized: AtomicU64,
    /// Requests refused for their Host or Origin.
    pub cross_site: AtomicU64,
    /// Bodies that did not arrive in time.
    pub body_timeouts: AtomicU64,
}

impl HttpStats {
    pub(crate) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, with at most
/// `max_connections` open at once and `header_timeout` for each request's
/// headers (idle keep-alive connections included).
pub(super) async fn run(
    listener: tokio::net::TcpListener,
    app: Router,
    max_connections: usize,
    header_timeout: Duration,
    stats: Arc<HttpStats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(header_timeout).keep_alive(true);
    let mut refused_logged = std::time::Instant::now() - Duration::from_secs(60);
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, or a connection reset while
                    // queued: wait a little rather than spin.
                    tracing::warn!(%err, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            HttpStats::count(&stats.connections_refused);
            if refused_logged.elapsed() > Duration::from_secs(10) {
                refused_logged = std::time::Instant::now();
                tracing::warn!(max_connections, "HTTP connection cap reached; closing new connections");
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("some HTTP requests were still running after {}s; closing them", DRAIN.as_secs());
    }
    Ok(())
}
