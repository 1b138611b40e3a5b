//! The Redis ledger of distributed mode.
//!
//! Keys of one dispatch share the hash tag `{<topic>-<request-id>}`, so they
//! live in one Redis Cluster slot:
//!
//! - `anocast:{<topic>-<request-id>}:interest`: the list of declared
//!   workers;
//! - `anocast:{<topic>-<request-id>}:closed`: present once the interest
//!   window has closed.
//!
//! Declare, settle, close and finish are each one Lua script, so each is
//! atomic, and every key is written with its time-to-live in the same step:
//! no key is ever left without one. `open` writes nothing: a list comes
//! into being with its first declaration.

use std::time::Duration;

use async_trait::async_trait;
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Ledger, LedgerError};

/// Pushes the worker unless the window has closed. 1: accepted, 0: refused.
const DECLARE: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1";

/// Removes one entry of the worker; returns how many remain.
const SETTLE: &str = r"
redis.call('LREM', KEYS[1], 1, ARGV[1])
return redis.call('LLEN', KEYS[1])";

/// Closes the window; returns the workers still on the list.
const CLOSE: &str = r"
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
return redis.call('LRANGE', KEYS[1], 0, -1)";

/// Closes the window (if still open) and drops the list; the closed marker
/// stays until its time-to-live, so late declarations are still refused.
const FINISH: &str = r"
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
redis.call('DEL', KEYS[1])
return 1";

/// Prefix of every key the project writes.
pub const KEY_PREFIX: &str = "anocast:";

/// The interest list and closed-marker keys of a dispatch.
pub fn keys(key: &str) -> (String, String) {
    (format!("{KEY_PREFIX}{{{key}}}:interest"), format!("{KEY_PREFIX}{{{key}}}:closed"))
}

/// Connects to Redis with bounded connection and response times, so that
/// a Redis outage fails calls instead of hanging them; the connection is
/// re-established on its own.
pub async fn connect(url: &str, timeout: Duration) -> Result<ConnectionManager, LedgerError> {
    let client = redis::Client::open(url).map_err(|e| LedgerError(format!("invalid Redis URL {url:?}: {e}")))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    tokio::time::timeout(timeout * 2, ConnectionManager::new_with_config(client, config))
        .await
        .map_err(|_| LedgerError(format!("cannot connect to Redis at {url}: no answer in time")))?
        .map_err(|e| LedgerError(format!("cannot connect to Redis at {url}: {e}")))
}

/// The distributed ledger.
#[derive(Clone)]
pub struct RedisLedger {
    conn: ConnectionManager,
    declare: Script,
    settle: Script,
    close: Script,
    finish: Script,
}

impl RedisLedger {
    /// A ledger over an established connection.
    pub fn new(conn: ConnectionManager) -> Self {
        RedisLedger {
            conn,
            declare: Script::new(DECLARE),
            settle: Script::new(SETTLE),
            close: Script::new(CLOSE),
            finish: Script::new(FINISH),
        }
    }
}

fn failed(what: &str) -> impl FnOnce(redis::RedisError) -> LedgerError + '_ {
    move |e| LedgerError(format!("redis {what}: {e}"))
}

fn ms(ttl: Duration) -> u64 {
    ttl.as_millis().max(1) as u64
}

#[async_trait]
impl Ledger for RedisLedger {
    async fn open(&self, _key: &str, _ttl: Duration) -> Result<(), LedgerError> {
        Ok(())
    }

    async fn declare(&self, key: &str, worker: &str, ttl: Duration) -> Result<bool, LedgerError> {
        let (list, closed) = keys(key);
        let accepted: i64 = self
            .declare
            .key(list)
            .key(closed)
            .arg(worker)
            .arg(ms(ttl))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(failed("declare"))?;
        Ok(accepted == 1)
    }

    async fn settle(&self, key: &str, worker: &str) -> Result<usize, LedgerError> {
        let (list, _) = keys(key);
        let left: i64 =
            self.settle.key(list).arg(worker).invoke_async(&mut self.conn.clone()).await.map_err(failed("settle"))?;
        Ok(left.max(0) as usize)
    }

    async fn close(&self, key: &str, ttl: Duration) -> Result<Vec<String>, LedgerError> {
        let (list, closed) = keys(key);
        self.close
            .key(list)
            .key(closed)
            .arg(ms(ttl))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(failed("close"))
    }

    async fn finish(&self, key: &str, ttl: Duration) -> Result<(), LedgerError> {
        let (list, closed) = keys(key);
        let _: i64 = self
            .finish
            .key(list)
            .key(closed)
            .arg(ms(ttl))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(failed("finish"))?;
        Ok(())
    }
}
