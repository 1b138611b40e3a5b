//! The Redis ledger of distributed mode.
//!
//! Keys of one dispatch share the hash tag `{<topic>-<request-id>}`, so they
//! live in one Redis Cluster slot:
//!
//! - `anocast:{<topic>-<request-id>}:interest`: the list of declared
//!   workers;
//! - `anocast:{<topic>-<request-id>}:closed`: present once the interest
//!   window has closed;
//! - `anocast:{<topic>-<request-id>}:answers`: how many receivers have
//!   answered, when the task says how many to expect.
//!
//! Declare, settle, close and finish are each one Lua script, so each is
//! atomic, and every key is written with its time-to-live in the same step:
//! no key is ever left without one. Forgetting a list whose window is
//! closed is a plain `DEL`; lists forgotten in the background are deleted
//! by one task, with as many `DEL`s in one pipelined request as have been
//! queued since its last (under load, one request for many dispatches).
//! `open` writes nothing: a list comes into being with its first
//! declaration.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, Script};
use tokio::sync::mpsc;

use super::{Declaration, ErrorKind, Ledger, LedgerError};
use crate::credentials::{RedisAuth, redact_url};

/// Pushes the worker unless the window has closed, and counts the answer.
/// Returns `{accepted, closed, declared workers...}`: `closed` is 1 when
/// this answer was the last expected one and closed the window.
pub(super) const DECLARE: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then return {0, 0} end
local n = redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local expected = tonumber(ARGV[3])
if expected > 0 then
  local answers = 1
  if expected > 1 then
    answers = redis.call('INCR', KEYS[3])
    redis.call('PEXPIRE', KEYS[3], ARGV[2])
  end
  if answers >= expected then
    redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
    if n == 1 then return {1, 1, ARGV[1]} end
    local out = {1, 1}
    for _, w in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do table.insert(out, w) end
    return out
  end
end
return {1, 0}";

/// Counts a receiver that is not interested. Returns `{closed, declared
/// workers...}` as [`DECLARE`] does.
pub(super) const DECLINE: &str = r"
local expected = tonumber(ARGV[2])
if expected == 0 or redis.call('EXISTS', KEYS[2]) == 1 then return {0} end
local answers = 1
if expected > 1 then
  answers = redis.call('INCR', KEYS[3])
  redis.call('PEXPIRE', KEYS[3], ARGV[1])
end
if answers >= expected then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
  local out = {1}
  for _, w in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do table.insert(out, w) end
  return out
end
return {0}";

/// Removes the worker's entry (the entry is the worker id, or starts with
/// it and a space when signed); returns how many remain.
pub(super) const SETTLE: &str = r"
local prefix = ARGV[1] .. ' '
for _, e in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if e == ARGV[1] or string.sub(e, 1, #prefix) == prefix then
    redis.call('LREM', KEYS[1], 1, e)
    break
  end
end
return redis.call('LLEN', KEYS[1])";

/// Closes the window; returns the workers still on the list.
pub(super) const CLOSE: &str = r"
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
return redis.call('LRANGE', KEYS[1], 0, -1)";

/// Closes the window (if still open) and drops the list and the answer
/// count; the closed marker stays until its time-to-live, so late
/// declarations are still refused.
pub(super) const FINISH: &str = r"
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
redis.call('DEL', KEYS[1], KEYS[3])
return 1";

/// Prefix of every key the project writes.
pub const KEY_PREFIX: &str = "anocast:";

/// The interest list, closed-marker and answer-count keys of a dispatch.
pub fn keys(key: &str) -> (String, String, String) {
    (
        format!("{KEY_PREFIX}{{{key}}}:interest"),
        format!("{KEY_PREFIX}{{{key}}}:closed"),
        format!("{KEY_PREFIX}{{{key}}}:answers"),
    )
}

/// Reads `{closed, workers...}` from position `at` of a script's answer.
fn closed_list(values: &[redis::Value], at: usize) -> Result<Option<Vec<String>>, LedgerError> {
    let flag = match values.get(at) {
        Some(redis::Value::Int(flag)) => *flag,
        other => {
            return Err(LedgerError::new(ErrorKind::Malformed, format!("unexpected answer from Redis: {other:?}")));
        }
    };
    if flag == 0 {
        return Ok(None);
    }
    values[at + 1..]
        .iter()
        .map(|v| match v {
            redis::Value::BulkString(bytes) => Ok(String::from_utf8_lossy(bytes).into_owned()),
            other => {
                Err(LedgerError::new(ErrorKind::Malformed, format!("unexpected worker in Redis's answer: {other:?}")))
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Connects to Redis with bounded connection and response times, so that
/// a Redis outage fails calls instead of hanging them; the connection is
/// re-established on its own. `auth` adds to what the URL says: an ACL user
/// and password, and TLS files for a `rediss://` URL. No error shows the
/// password.
pub async fn connect(url: &str, auth: &RedisAuth, timeout: Duration) -> Result<ConnectionManager, LedgerError> {
    let shown = redact_url(url);
    let config = |what: String| LedgerError::new(ErrorKind::Config, what);
    let mut info = url
        .into_connection_info()
        .map_err(|e| config(format!("invalid Redis URL {shown}: {}", redact_url(&e.to_string()))))?;
    let mut settings = info.redis_settings().clone();
    if let Some(user) = &auth.user {
        settings = settings.set_username(user);
    }
    if let Some(password) = &auth.password {
        settings = settings.set_password(password.expose());
    }
    info = info.set_redis_settings(settings);
    let tls = &auth.tls;
    let client = if tls.any() {
        if !matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
            return Err(config(format!("the Redis TLS files need a rediss:// URL, not {shown}")));
        }
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| config(format!("cannot read TLS file {}: {e}", path.display())))
        };
        let client_tls = match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => {
                Some(redis::ClientTlsConfig { client_cert: read(cert)?, client_key: read(key)? })
            }
            (None, None) => None,
            _ => {
                return Err(config(
                    "a Redis client certificate needs both --redis-tls-cert and --redis-tls-key".into(),
                ));
            }
        };
        let root_cert = tls.ca.as_deref().map(read).transpose()?;
        redis::Client::build_with_tls(info, redis::TlsCertificates { client_tls, root_cert })
    } else {
        redis::Client::open(info)
    }
    .map_err(|e| LedgerError::with_source(ErrorKind::Config, format!("cannot use Redis URL {shown}"), e))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    tokio::time::timeout(timeout * 2, ConnectionManager::new_with_config(client, config))
        .await
        .map_err(|_| {
            LedgerError::new(ErrorKind::TimedOut, format!("cannot connect to Redis at {shown}: no answer in time"))
        })?
        .map_err(|e| LedgerError::redis(format!("cannot connect to Redis at {shown}"), e))
}

/// Forgets a list whose window is closed: its closed marker stays.
fn forget_command(key: &str) -> redis::Cmd {
    let (list, _, answers) = keys(key);
    let mut command = redis::cmd("DEL");
    command.arg(list).arg(answers);
    command
}

/// Most lists forgotten in one pipelined request.
const FORGET_BATCH: usize = 256;

/// The distributed ledger.
#[derive(Clone)]
pub struct RedisLedger {
    conn: ConnectionManager,
    declare: Script,
    decline: Script,
    settle: Script,
    close: Script,
    finish: Script,
    /// Lists to forget in the background; its task starts with the first.
    forgetter: Arc<OnceLock<Forgetter>>,
}

/// The queue of lists to forget, and the task that deletes them in batches.
/// Dropped with the last clone of the ledger; lists still queued then
/// expire with their time-to-live.
struct Forgetter {
    queue: mpsc::UnboundedSender<String>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Forgetter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Forgetter {
    fn start(conn: ConnectionManager, handle: &tokio::runtime::Handle) -> Self {
        let (queue, mut queued) = mpsc::unbounded_channel::<String>();
        let task = handle.spawn(async move {
            let mut batch = Vec::with_capacity(FORGET_BATCH);
            while queued.recv_many(&mut batch, FORGET_BATCH).await > 0 {
                let mut pipe = redis::pipe();
                for key in &batch {
                    pipe.add_command(forget_command(key)).ignore();
                }
                if let Err(err) = pipe.query_async::<()>(&mut conn.clone()).await {
                    tracing::warn!(%err, lists = batch.len(), "could not forget interest lists; they will expire");
                }
                batch.clear();
            }
        });
        Forgetter { queue, task }
    }
}

impl RedisLedger {
    /// A ledger over an established connection.
    pub fn new(conn: ConnectionManager) -> Self {
        RedisLedger {
            conn,
            declare: Script::new(DECLARE),
            decline: Script::new(DECLINE),
            settle: Script::new(SETTLE),
            close: Script::new(CLOSE),
            finish: Script::new(FINISH),
            forgetter: Arc::default(),
        }
    }
}

fn failed(what: &str) -> impl FnOnce(redis::RedisError) -> LedgerError + '_ {
    move |e| LedgerError::redis(format!("redis {what}"), e)
}

fn ms(ttl: Duration) -> u64 {
    ttl.as_millis().max(1) as u64
}

#[async_trait]
impl Ledger for RedisLedger {
    async fn open(&self, _key: &str, _ttl: Duration) -> Result<(), LedgerError> {
        Ok(())
    }

    async fn declare(&self, key: &str, worker: &str, ttl: Duration, expected: u32) -> Result<Declaration, LedgerError> {
        let (list, closed, answers) = keys(key);
        let values: Vec<redis::Value> = self
            .declare
            .key(list)
            .key(closed)
            .key(answers)
            .arg(worker)
            .arg(ms(ttl))
            .arg(expected)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(failed("declare"))?;
        let accepted = matches!(values.first(), Some(redis::Value::Int(1)));
        Ok(Declaration { accepted, closed: if accepted { closed_list(&values, 1)? } else { None } })
    }

    async fn decline(&self, key: &str, ttl: Duration, expected: u32) -> Result<Option<Vec<String>>, LedgerError> {
        let (list, closed, answers) = keys(key);
        let values: Vec<redis::Value> = self
            .decline
            .key(list)
            .key(closed)
            .key(answers)
            .arg(ms(ttl))
            .arg(expected)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(failed("decline"))?;
        closed_list(&values, 0)
    }

    async fn settle(&self, key: &str, worker: &str) -> Result<usize, LedgerError> {
        let (list, _, _) = keys(key);
        let left: i64 =
            self.settle.key(list).arg(worker).invoke_async(&mut self.conn.clone()).await.map_err(failed("settle"))?;
        Ok(left.max(0) as usize)
    }

    async fn close(&self, key: &str, ttl: Duration) -> Result<Vec<String>, LedgerError> {
        let (list, closed, _) = keys(key);
        self.close
            .key(list)
            .key(closed)
            .arg(ms(ttl))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(failed("close"))
    }

    async fn forget(&self, key: &str) -> Result<(), LedgerError> {
        let _: i64 = forget_command(key).query_async(&mut self.conn.clone()).await.map_err(failed("del"))?;
        Ok(())
    }

    fn forget_later(&self, key: String) {
        let forgetter = match self.forgetter.get() {
            Some(forgetter) => forgetter,
            None => {
                // Outside a runtime there is nobody to forget it: the list
                // expires with its time-to-live.
                let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
                self.forgetter.get_or_init(|| Forgetter::start(self.conn.clone(), &handle))
            }
        };
        // The queue is closed only once the ledger is gone.
        let _ = forgetter.queue.send(key);
    }

    async fn finish(&self, key: &str, ttl: Duration) -> Result<(), LedgerError> {
        let (list, closed, answers) = keys(key);
        let _: i64 = self
            .finish
            .key(list)
            .key(closed)
            .key(answers)
            .arg(ms(ttl))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(failed("finish"))?;
        Ok(())
    }
}
