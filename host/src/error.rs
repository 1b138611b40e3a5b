//! The errors of the layers that talk to servers and peers: the bus
//! ([`BusError`]), the ledger ([`LedgerError`]) and the store
//! ([`StoreError`]). Each carries a [`ErrorKind`] that callers can match,
//! says what was being done, and keeps its source.
//!
//! Also the rate limit on warnings about rejected input ([`LogGate`],
//! `warn_limited!`), shared by every layer that reads from peers.

use std::fmt;
use std::sync::Arc;

/// What kind of failure an error is, whichever layer it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The server could not be reached, or the connection was lost.
    Unreachable,
    /// The server did not answer in time.
    TimedOut,
    /// The server refused the request (authorization, a script error).
    Refused,
    /// What the server or a peer sent could not be understood.
    Malformed,
    /// The configuration is unusable (a URL that does not parse).
    Config,
}

impl ErrorKind {
    /// The kind as text, e.g. for a log field.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::TimedOut => "timed out",
            ErrorKind::Refused => "refused",
            ErrorKind::Malformed => "malformed",
            ErrorKind::Config => "config",
        }
    }

    /// The kind of a Redis client error.
    pub(crate) fn of_redis(err: &redis::RedisError) -> Self {
        if err.is_timeout() {
            ErrorKind::TimedOut
        } else if err.is_connection_refusal() || err.is_connection_dropped() || err.is_io_error() {
            ErrorKind::Unreachable
        } else if err.kind() == redis::ErrorKind::InvalidClientConfig {
            ErrorKind::Config
        } else if matches!(err.kind(), redis::ErrorKind::UnexpectedReturnType | redis::ErrorKind::Parse) {
            ErrorKind::Malformed
        } else {
            ErrorKind::Refused
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Source = Arc<dyn std::error::Error + Send + Sync + 'static>;

macro_rules! layer_error {
    ($(#[$doc:meta])* $name:ident, $layer:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            kind: ErrorKind,
            what: String,
            source: Option<Source>,
        }

        impl $name {
            /// An error of `kind` while doing `what`, with no source.
            pub fn new(kind: ErrorKind, what: impl Into<String>) -> Self {
                $name { kind, what: what.into(), source: None }
            }

            /// An error of `kind` while doing `what`, caused by `source`.
            pub fn with_source(
                kind: ErrorKind,
                what: impl Into<String>,
                source: impl std::error::Error + Send + Sync + 'static,
            ) -> Self {
                $name { kind, what: what.into(), source: Some(Arc::new(source)) }
            }

            /// What kind of failure it is.
            pub fn kind(&self) -> ErrorKind {
                self.kind
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($layer, ": {}"), self.what)?;
                match &self.source {
                    Some(source) => write!(f, ": {source}"),
                    None => Ok(()),
                }
            }
        }

        impl std::error::Error for $name {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.source.as_deref().map(|s| s as &(dyn std::error::Error + 'static))
            }
        }
    };
}

layer_error!(
    /// A bus failure (never a worker's failure: those travel as replies).
    BusError,
    "bus"
);
layer_error!(
    /// A ledger failure.
    LedgerError,
    "ledger"
);
layer_error!(
    /// A store failure.
    StoreError,
    "store"
);

impl LedgerError {
    /// A Redis error while doing `what`.
    pub(crate) fn redis(what: impl Into<String>, err: redis::RedisError) -> Self {
        LedgerError::with_source(ErrorKind::of_redis(&err), what, err)
    }
}

impl StoreError {
    /// A Redis error while doing `what`.
    pub(crate) fn redis(what: impl Into<String>, err: redis::RedisError) -> Self {
        StoreError::with_source(ErrorKind::of_redis(&err), what, err)
    }
}

/// Lets a log line through at most once per ten seconds per call site;
/// the lines held back meanwhile are counted into the next one. Hostile
/// peers can send bad messages faster than a log can take them; every one
/// is still counted in its rejection counter.
pub(crate) struct LogGate {
    last_ms: std::sync::atomic::AtomicU64,
    held: std::sync::atomic::AtomicU64,
}

impl LogGate {
    const QUIET_MS: u64 = 10_000;

    pub(crate) const fn new() -> Self {
        LogGate { last_ms: std::sync::atomic::AtomicU64::new(0), held: std::sync::atomic::AtomicU64::new(0) }
    }

    /// `Some(lines held back)` when a line may be written now.
    pub(crate) fn pass(&self) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        let last = self.last_ms.load(Relaxed);
        if now.saturating_sub(last) >= Self::QUIET_MS
            && self.last_ms.compare_exchange(last, now, Relaxed, Relaxed).is_ok()
        {
            Some(self.held.swap(0, Relaxed))
        } else {
            self.held.fetch_add(1, Relaxed);
            None
        }
    }
}

/// `tracing::warn!`, at most once per ten seconds per call site (see
/// [`LogGate`]), with the number of lines held back as `held_back`.
macro_rules! warn_limited {
    ($($arg:tt)+) => {{
        static GATE: $crate::error::LogGate = $crate::error::LogGate::new();
        if let Some(held_back) = GATE.pass() {
            tracing::warn!(held_back, $($arg)+);
        }
    }};
}
pub(crate) use warn_limited;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_their_kind_and_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let err = BusError::with_source(ErrorKind::Unreachable, "cannot connect to NATS", io);
        assert_eq!(err.kind(), ErrorKind::Unreachable);
        assert_eq!(err.to_string(), "bus: cannot connect to NATS: connection refused");
        let source = std::error::Error::source(&err).expect("a source");
        assert_eq!(source.to_string(), "connection refused");
        let err = LedgerError::new(ErrorKind::Malformed, "unexpected answer from Redis");
        assert!(std::error::Error::source(&err).is_none());
        assert!(matches!(err.kind(), ErrorKind::Malformed));
    }

    #[test]
    fn redis_errors_are_classified() {
        let refused: redis::RedisError = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused").into();
        assert_eq!(ErrorKind::of_redis(&refused), ErrorKind::Unreachable);
        let timeout: redis::RedisError = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow").into();
        assert_eq!(ErrorKind::of_redis(&timeout), ErrorKind::TimedOut);
        let auth: redis::RedisError = (redis::ErrorKind::AuthenticationFailed, "WRONGPASS").into();
        assert_eq!(ErrorKind::of_redis(&auth), ErrorKind::Refused);
        let answer: redis::RedisError = (redis::ErrorKind::UnexpectedReturnType, "not an int").into();
        assert_eq!(ErrorKind::of_redis(&answer), ErrorKind::Malformed);
    }
}
