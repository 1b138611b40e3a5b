//! Who may use the API, and how much of it at once: the bearer token, the
//! Host and Origin checks that stop cross-site and DNS-rebinding requests,
//! and the limit on requests in flight (503 with `Retry-After` beyond it).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::ApiError;
use super::server::HttpStats;
use crate::credentials::Secret;

/// How the API is guarded and bounded.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The bearer token every request but `GET /healthz` and `GET
    /// /v1/plugins` must carry (`Authorization: Bearer <token>`); without
    /// it, `/v1/plugins` leaves out file paths and keys. Required when the
    /// API listens on an address other than loopback.
    pub token: Option<Secret>,
    /// Host names (beyond IP addresses and `localhost`) a request's `Host`
    /// header may name: the node's DNS names. Others are refused, which
    /// stops DNS rebinding.
    pub allowed_hosts: Vec<String>,
    /// Origins (`https://app.example`) whose pages may call the API
    /// (CORS). Empty: no cross-origin page may.
    pub cors_origins: Vec<String>,
    /// Longest wait for a request's headers (also for an idle
    /// keep-alive connection's next request).
    pub header_timeout: Duration,
    /// Longest wait for a request's whole body.
    pub body_timeout: Duration,
    /// Longest a whole request may take; a dispatch's timeout must fit in
    /// it.
    pub request_timeout: Duration,
    /// Most connections open at once; more are closed at once.
    pub max_connections: usize,
    /// Most dispatch and settle requests in flight at once; more are
    /// answered 503 with `Retry-After`.
    pub max_concurrent: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            token: None,
            allowed_hosts: Vec::new(),
            cors_origins: Vec::new(),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(300),
            max_connections: 1024,
            max_concurrent: 128,
        }
    }
}

impl GatewayConfig {
    /// Checks the settings against the address the API listens on.
    pub fn check(&self, listen: std::net::SocketAddr) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.token.is_some() || listen.ip().is_loopback(),
            "the HTTP API listens on {listen}, which is not a loopback address, so it needs an API token: \
             give --api-token-file FILE (or ANOCAST_API_TOKEN)"
        );
        if let Some(token) = &self.token {
            anyhow::ensure!(token.expose().len() >= 16, "the API token must be at least 16 characters long");
        }
        anyhow::ensure!(self.max_connections > 0 && self.max_concurrent > 0, "the HTTP limits must be above zero");
        anyhow::ensure!(
            self.request_timeout > self.body_timeout,
            "the HTTP request timeout must be longer than the body timeout"
        );
        for origin in &self.cors_origins {
            anyhow::ensure!(
                HeaderValue::from_str(origin).is_ok() && origin.contains("://") && !origin.ends_with('/'),
                "invalid CORS origin {origin:?}: expected scheme://host[:port], e.g. https://app.example"
            );
        }
        Ok(())
    }
}

/// What the middleware shares.
pub(crate) struct Guard {
    /// SHA-256 of the token, compared in constant time.
    token: Option<[u8; 32]>,
    allowed_hosts: Vec<String>,
    cors_origins: Vec<String>,
    in_flight: Arc<Semaphore>,
    max_concurrent: usize,
    pub(crate) stats: Arc<HttpStats>,
}

impl Guard {
    pub(crate) fn new(config: &GatewayConfig, stats: Arc<HttpStats>) -> Self {
        Guard {
            token: config.token.as_ref().map(|t| Sha256::digest(t.expose().as_bytes()).into()),
            allowed_hosts: config.allowed_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            cors_origins: config.cors_origins.clone(),
            in_flight: Arc::new(Semaphore::new(config.max_concurrent)),
            max_concurrent: config.max_concurrent,
            stats,
        }
    }

    /// Whether the request carries the token (true when none is set).
    pub(crate) fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.token else { return true };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(|t| <[u8; 32]>::from(Sha256::digest(t.trim().as_bytes())));
        // Both sides are digests of the same length: compare every byte.
        given.is_some_and(|given| given.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0)
    }

    /// The host part of a `Host` header (no port, lower case).
    fn host_name(value: &str) -> String {
        let value = value.trim().to_ascii_lowercase();
        if let Some(rest) = value.strip_prefix('[') {
            return rest.split(']').next().unwrap_or_default().to_owned();
        }
        value.rsplit_once(':').map_or(value.clone(), |(host, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) { host.to_owned() } else { value.clone() }
        })
    }

    /// Whether `host` (a `Host` header) names this node: an IP address,
    /// `localhost`, or an allowed name.
    fn host_allowed(&self, host: &str) -> bool {
        let name = Self::host_name(host);
        name.parse::<IpAddr>().is_ok() || name == "localhost" || self.allowed_hosts.contains(&name)
    }

    /// Why a request must be refused for where it comes from, if it must.
    fn cross_site(&self, headers: &HeaderMap) -> Option<String> {
        let host = match headers.get(header::HOST).map(|h| h.to_str()) {
            Some(Ok(host)) => host,
            Some(Err(_)) => return Some("the Host header is not ASCII".into()),
            None => return Some("the request has no Host header".into()),
        };
        if !self.host_allowed(host) {
            return Some(format!("Host {host:?} is not a name of this node; add it with --allowed-host if it is one"));
        }
        match headers.get(header::ORIGIN).map(|o| o.to_str()) {
            None => {}
            Some(Err(_)) => return Some("the Origin header is not ASCII".into()),
            Some(Ok(origin)) => {
                let same = origin.split_once("://").is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host));
                if !same && !self.cors_origins.iter().any(|o| o == origin) {
                    return Some(format!("cross-origin request from {origin:?} refused (see --cors-origin)"));
                }
                return None;
            }
        }
        // A browser's cross-site request without an Origin (a plain GET).
        if headers.get("sec-fetch-site").is_some_and(|v| v.as_bytes() == b"cross-site") {
            return Some("cross-site request refused (see --cors-origin)".into());
        }
        None
    }
}

/// Refuses cross-site and DNS-rebinding requests: on every route.
pub(crate) async fn check_origin(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    if let Some(reason) = guard.cross_site(request.headers()) {
        HttpStats::count(&guard.stats.cross_site);
        return ApiError(StatusCode::FORBIDDEN, reason).into_response();
    }
    next.run(request).await
}

/// Requires the token: on the routes that act.
pub(crate) async fn require_token(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    if !guard.authorized(request.headers()) {
        HttpStats::count(&guard.stats.unauthorized);
        let mut response = ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or wrong API token: send `Authorization: Bearer <token>`".into(),
        )
        .into_response();
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    next.run(request).await
}

/// Bounds the requests in flight; beyond, 503 with `Retry-After` (before
/// the body is read, so refused requests cost no memory).
pub(crate) async fn limit(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let Ok(_permit) = guard.in_flight.clone().try_acquire_owned() else {
        HttpStats::count(&guard.stats.saturated);
        let mut response = ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the node is saturated ({} requests in flight); retry later", guard.max_concurrent),
        )
        .into_response();
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    };
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(token: Option<&str>) -> Guard {
        let config = GatewayConfig {
            token: token.map(Secret::new),
            allowed_hosts: vec!["Node.Example".into()],
            cors_origins: vec!["https://app.example".into()],
            ..GatewayConfig::default()
        };
        Guard::new(&config, Arc::default())
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(header::HeaderName::from_bytes(name.as_bytes()).expect("valid"), value.parse().expect("valid"));
        }
        map
    }

    #[test]
    fn hosts_and_origins() {
        let g = guard(None);
        for host in ["127.0.0.1:7700", "localhost:7700", "[::1]:7700", "10.0.0.5", "node.example:80"] {
            assert_eq!(g.cross_site(&headers(&[("host", host)])), None, "{host}");
        }
        assert!(g.cross_site(&headers(&[("host", "evil.example:7700")])).expect("valid").contains("--allowed-host"));
        assert!(g.cross_site(&headers(&[])).is_some());
        let same = headers(&[("host", "127.0.0.1:7700"), ("origin", "http://127.0.0.1:7700")]);
        assert_eq!(g.cross_site(&same), None);
        let listed = headers(&[("host", "127.0.0.1:7700"), ("origin", "https://app.example")]);
        assert_eq!(g.cross_site(&listed), None);
        let other = headers(&[("host", "127.0.0.1:7700"), ("origin", "https://evil.example")]);
        assert!(g.cross_site(&other).expect("valid").contains("cross-origin"));
        let fetch = headers(&[("host", "127.0.0.1:7700"), ("sec-fetch-site", "cross-site")]);
        assert!(g.cross_site(&fetch).is_some());
    }

    #[test]
    fn tokens() {
        assert!(guard(None).authorized(&headers(&[])));
        let g = guard(Some("0123456789abcdef-token"));
        assert!(g.authorized(&headers(&[("authorization", "Bearer 0123456789abcdef-token")])));
        assert!(!g.authorized(&headers(&[("authorization", "Bearer 0123456789abcdef-tokeN")])));
        assert!(!g.authorized(&headers(&[("authorization", "Basic 0123456789abcdef-token")])));
        assert!(!g.authorized(&headers(&[])));
    }

    #[test]
    fn a_public_address_needs_a_token() {
        let open = GatewayConfig::default();
        assert!(open.check("127.0.0.1:7700".parse().expect("valid")).is_ok());
        let err = open.check("0.0.0.0:7700".parse().expect("valid")).expect_err("fails").to_string();
        assert!(err.contains("needs an API token"), "{err}");
        let short = GatewayConfig { token: Some(Secret::new("short")), ..GatewayConfig::default() };
        assert!(short.check("0.0.0.0:7700".parse().expect("valid")).is_err());
    }
}
