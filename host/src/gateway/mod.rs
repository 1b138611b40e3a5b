//! The HTTP API: the pattern's API gateway, one synchronous request over
//! an asynchronous fan-out.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/dispatch/{topic}` | body = payload; query `timeout_ms`, `grace_ms`, `settle` (`all-ok`, `commit`, `abort`, `manual`); answers the outcome JSON |
//! | `POST /v1/settle/{request-id}/{decision}` | commits or aborts a dispatch's staged writes (`commit` or `abort`; for the `manual` policy); 202 |
//! | `GET /v1/plugins` | the node's plugins (with what each has done), and the files that failed to load |
//! | `GET /healthz` | `{"status": "ok"}` |
//!
//! Every error is a 4xx or 5xx with a JSON body `{"error": "..."}`.
//!
//! Guards ([`guard`]): a bearer token on the routes that act (required
//! when the API listens beyond loopback), Host and Origin checks on every
//! route, a limit on requests in flight (503 with `Retry-After`), timeouts
//! for headers, body and the whole request, and a connection cap
//! ([`server`]). A body larger than the bus can carry is a 413.

mod guard;
mod server;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

pub use guard::GatewayConfig;
pub use server::HttpStats;

use crate::bus::Decision;
use crate::dispatch::{DispatchError, DispatchOptions};
use crate::settle::SettlePolicy;
use crate::{Host, Topic};
use guard::Guard;

/// Largest request body accepted as a payload (8 MiB); in distributed
/// mode, less when the bus carries less.
pub const MAX_PAYLOAD: usize = 8 << 20;

/// What the handlers share.
struct Api {
    host: Arc<Host>,
    guard: Arc<Guard>,
    body_timeout: Duration,
    request_timeout: Duration,
}

/// An error answer: a status and a one-line message.
#[derive(Debug)]
pub(crate) struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

/// The routes and their guards.
fn router(host: Arc<Host>, config: &GatewayConfig, stats: Arc<HttpStats>) -> Router {
    let guard = Arc::new(Guard::new(config, stats));
    let api = Arc::new(Api {
        host,
        guard: guard.clone(),
        body_timeout: config.body_timeout,
        request_timeout: config.request_timeout,
    });
    let acting = Router::new()
        .route("/v1/dispatch/{topic}", post(dispatch))
        .route("/v1/settle/{request_id}/{decision}", post(settle))
        .route_layer(from_fn_with_state(guard.clone(), guard::limit))
        .route_layer(from_fn_with_state(guard.clone(), guard::require_token));
    let router = Router::new()
        .merge(acting)
        .route("/v1/plugins", get(plugins))
        .route("/healthz", get(|| async { Json(json!({ "status": "ok" })) }))
        .fallback(|| async {
            ApiError(StatusCode::NOT_FOUND, "no such route; see GET /v1/plugins, POST /v1/dispatch/{topic}".into())
        })
        .method_not_allowed_fallback(|| async {
            ApiError(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route".into())
        })
        .with_state(api)
        .layer(from_fn_with_state(guard, guard::check_origin));
    let router = if config.cors_origins.is_empty() {
        router
    } else {
        let origins: Vec<_> = config.cors_origins.iter().filter_map(|o| o.parse().ok()).collect();
        router.layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(origins)
                .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
        )
    };
    router
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, config.request_timeout))
}

/// Serves the API on `listener` until `shutdown` resolves, guarded and
/// bounded as `config` says (see [`GatewayConfig::check`]); refusals are
/// counted in `stats`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    host: Arc<Host>,
    config: GatewayConfig,
    stats: Arc<HttpStats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(host, &config, stats.clone());
    server::run(listener, app, config.max_connections, config.header_timeout, stats, shutdown).await
}

/// Reads a body of at most `limit` bytes within `timeout`.
async fn read_body(body: Body, limit: usize, timeout: Duration, stats: &HttpStats) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError(StatusCode::PAYLOAD_TOO_LARGE, format!("the payload is larger than this node accepts ({limit} bytes)"))
    };
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(err)) => {
            let limited = std::error::Error::source(&err)
                .is_some_and(|e| e.downcast_ref::<http_body_util::LengthLimitError>().is_some());
            if limited { Err(too_large()) } else { Err(bad_request(format!("cannot read the body: {err}"))) }
        }
        Err(_) => {
            HttpStats::count(&stats.body_timeouts);
            Err(ApiError(
                StatusCode::REQUEST_TIMEOUT,
                format!("the body did not arrive within {}", humantime::format_duration(timeout)),
            ))
        }
    }
}

/// Query parameters of a dispatch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DispatchQuery {
    timeout_ms: Option<u64>,
    grace_ms: Option<u64>,
    settle: Option<String>,
}

async fn dispatch(
    State(api): State<Arc<Api>>,
    Path(topic): Path<String>,
    query: Result<Query<DispatchQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let host = &api.host;
    let topic = Topic::parse(&topic).map_err(|e| bad_request(e.to_string()))?;
    let Query(query) = query.map_err(|e| bad_request(format!("invalid query: {}", e.body_text())))?;
    let limit = MAX_PAYLOAD.min(host.max_payload());
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the payload is larger than this node accepts ({limit} bytes)"),
        ));
    }
    let mut options = DispatchOptions::default();
    if let Some(ms) = query.timeout_ms {
        options.timeout = Duration::from_millis(ms);
    }
    // The dispatch, with the body read before it, must fit in the request.
    let room = api.request_timeout.saturating_sub(api.body_timeout);
    if options.timeout > room {
        return Err(bad_request(format!(
            "timeout must be at most {} ms on this node (its HTTP request timeout less its body timeout)",
            room.as_millis()
        )));
    }
    if let Some(ms) = query.grace_ms {
        options.grace = Duration::from_millis(ms);
    }
    if let Some(policy) = &query.settle {
        options.settle = SettlePolicy::parse(policy).map_err(bad_request)?;
    }
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        options.content_type =
            content_type.to_str().map_err(|_| bad_request("the Content-Type header is not ASCII"))?.to_owned();
    }
    let body = read_body(body, limit, api.body_timeout, &api.guard.stats).await?;
    let outcome = host.dispatcher().dispatch(topic, body.to_vec(), &options).await.map_err(|e| match e {
        DispatchError::InvalidOptions(message) => bad_request(message),
        DispatchError::TooLarge(message) => ApiError(StatusCode::PAYLOAD_TOO_LARGE, message),
        other => ApiError(StatusCode::SERVICE_UNAVAILABLE, other.to_string()),
    })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], outcome.to_json()).into_response())
}

async fn settle(
    State(api): State<Arc<Api>>,
    Path((request_id, decision)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let host = &api.host;
    let decision = Decision::parse(&decision).ok_or_else(|| bad_request("the decision must be commit or abort"))?;
    anocast_wire::names::check_request_id(&request_id).map_err(|err| bad_request(err.to_string()))?;
    host.dispatcher().settle(&request_id, decision).await;
    let body = json!({ "request_id": request_id, "settle": decision });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// The node's plugins; file paths and keys only for a caller with the
/// token (or when the node has none).
async fn plugins(State(api): State<Arc<Api>>, headers: HeaderMap) -> Json<serde_json::Value> {
    let host = &api.host;
    let trusted = api.guard.authorized(&headers);
    // A file's whole path, or only its name for a caller without the token.
    let shown = |file: &std::path::Path| match trusted {
        true => file.display().to_string(),
        false => file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
    };
    let set = host.plugins();
    let versions = host.plugin_versions();
    let plugins: Vec<_> = set
        .loaded
        .iter()
        .map(|p| {
            let name = &p.plugin.info.name;
            let of_this = || versions.iter().filter(|v| &v.name == name);
            json!({
                "name": p.plugin.info.name,
                "version": p.plugin.info.version,
                "topics": p.plugin.info.topics,
                "digest": format!("sha256:{}", p.plugin.digest),
                "size": p.plugin.size,
                "stateless": p.plugin.stateless,
                "warm_idle": p.plugin.warm_idle(),
                "file": shown(&p.file),
                "loaded_at_ms": p.loaded_at.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64,
                "stats": host.stats(name).as_deref(),
                "in_flight": of_this().filter(|v| v.current).map(|v| v.in_flight).sum::<usize>(),
                // Older versions still finishing tasks they started.
                "draining": of_this().filter(|v| !v.current).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(json!({
        "node": host.node_id(),
        "mode": if host.is_distributed() { "distributed" } else { "embedded" },
        "plugins": plugins,
        "errors": set.failed.iter().map(|f| json!({
            "file": shown(&f.file),
            "error": f.error,
            "digest": f.digest,
            "failed_at_ms": f.failed_at_ms,
        })).collect::<Vec<_>>(),
        "cache": host.runtime().cache().map(|c| &c.stats),
        "memory": {
            "budget_bytes": host.runtime().memory_budget().limit(),
            "used_bytes": host.runtime().memory_budget().used(),
            "refused": host.runtime().memory_budget().refused(),
        },
        "rescans": host.rescans(),
        "settle": host.staging().stats(),
        "mesh": host.mesh_nodes(),
        "key": host.security().filter(|_| trusted).map(|s| s.key().public().to_string()),
        "rejected": host.security().map(|s| &s.stats),
        "http": &*api.guard.stats,
    }))
}
