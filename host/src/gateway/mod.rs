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

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use crate::bus::Decision;
use crate::dispatch::{DispatchError, DispatchOptions};
use crate::settle::SettlePolicy;
use crate::{Host, Topic};

/// Largest request body accepted as a payload (8 MiB).
pub const MAX_PAYLOAD: usize = 8 << 20;

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

/// The routes, over an embedded host.
pub(crate) fn router(host: Arc<Host>) -> Router {
    Router::new()
        .route("/v1/dispatch/{topic}", post(dispatch))
        .route("/v1/settle/{request_id}/{decision}", post(settle))
        .route("/v1/plugins", get(plugins))
        .route("/healthz", get(|| async { Json(json!({ "status": "ok" })) }))
        .fallback(|| async {
            ApiError(StatusCode::NOT_FOUND, "no such route; see GET /v1/plugins, POST /v1/dispatch/{topic}".into())
        })
        .method_not_allowed_fallback(|| async {
            ApiError(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route".into())
        })
        .layer(DefaultBodyLimit::max(MAX_PAYLOAD))
        .with_state(host)
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    host: Arc<Host>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(host)).with_graceful_shutdown(shutdown).await
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
    State(host): State<Arc<Host>>,
    Path(topic): Path<String>,
    query: Result<Query<DispatchQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let topic = Topic::parse(&topic).map_err(|e| bad_request(e.to_string()))?;
    let Query(query) = query.map_err(|e| bad_request(format!("invalid query: {}", e.body_text())))?;
    let body = body.map_err(|e| ApiError(e.status(), e.body_text()))?;
    let mut options = DispatchOptions::default();
    if let Some(ms) = query.timeout_ms {
        options.timeout = Duration::from_millis(ms);
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
    let outcome = host.dispatcher().dispatch(topic, body.to_vec(), &options).await.map_err(|e| match e {
        DispatchError::InvalidOptions(message) => bad_request(message),
        other => ApiError(StatusCode::SERVICE_UNAVAILABLE, other.to_string()),
    })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], outcome.to_json()).into_response())
}

async fn settle(
    State(host): State<Arc<Host>>,
    Path((request_id, decision)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let decision = Decision::parse(&decision).ok_or_else(|| bad_request("the decision must be commit or abort"))?;
    anocast_wire::names::check_request_id(&request_id).map_err(|err| bad_request(err.to_string()))?;
    host.dispatcher().settle(&request_id, decision).await;
    let body = json!({ "request_id": request_id, "settle": decision });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

async fn plugins(State(host): State<Arc<Host>>) -> Json<serde_json::Value> {
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
                "file": p.file,
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
        "errors": set.failed,
        "cache": host.runtime().cache().map(|c| &c.stats),
        "rescans": host.rescans(),
        "settle": host.staging().stats(),
        "mesh": host.mesh_nodes(),
        "key": host.security().map(|s| s.key().public().to_string()),
        "rejected": host.security().map(|s| &s.stats),
    }))
}
