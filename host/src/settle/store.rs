//! The key-value store committed writes go to, one namespace per plugin
//! name: in memory in embedded mode ([`MemoryStore`]), in Redis in
//! distributed mode ([`RedisStore`]), where every node of the mesh reads
//! the same values.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;

use crate::runtime::Op;

pub use crate::error::StoreError;

/// Committed values, by plugin name and key.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The committed value of `key` in `plugin`'s namespace.
    async fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Applies `ops` to `plugin`'s namespace, all or none.
    async fn apply(&self, plugin: &str, ops: &[Op]) -> Result<(), StoreError>;
}

/// The in-process store of embedded mode; values live as long as the host.
#[derive(Default)]
pub struct MemoryStore {
    values: parking_lot::RwLock<HashMap<(String, String), Vec<u8>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.values.read().get(&(plugin.to_owned(), key.to_owned())).cloned())
    }

    async fn apply(&self, plugin: &str, ops: &[Op]) -> Result<(), StoreError> {
        let mut values = self.values.write();
        for op in ops {
            match op {
                Op::Set(key, value) => values.insert((plugin.to_owned(), key.clone()), value.clone()),
                Op::Delete(key) => values.remove(&(plugin.to_owned(), key.clone())),
            };
        }
        Ok(())
    }
}

/// The Redis key of `plugin`'s `key`: `anocast:kv:{<plugin>}:<key>`. The
/// hash tag keeps one plugin's keys in one Redis Cluster slot, so that a
/// task's writes apply in one transaction.
pub fn redis_key(plugin: &str, key: &str) -> String {
    format!("anocast:kv:{{{plugin}}}:{key}")
}

/// The store of distributed mode. Each committed value lives for the
/// retention after its last write (no key anocast writes is left without a
/// time-to-live).
pub struct RedisStore {
    conn: ConnectionManager,
    retention: Duration,
}

impl RedisStore {
    /// A store on `conn`, values kept for `retention`.
    pub fn new(conn: ConnectionManager, retention: Duration) -> Self {
        RedisStore { conn, retention }
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("GET")
            .arg(redis_key(plugin, key))
            .query_async(&mut conn)
            .await
            .map_err(|e| StoreError::redis("GET", e))
    }

    async fn apply(&self, plugin: &str, ops: &[Op]) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        let ms = self.retention.as_millis() as u64;
        for op in ops {
            match op {
                Op::Set(key, value) => pipe.cmd("SET").arg(redis_key(plugin, key)).arg(value).arg("PX").arg(ms),
                Op::Delete(key) => pipe.cmd("DEL").arg(redis_key(plugin, key)),
            };
            pipe.ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await.map_err(|e| StoreError::redis("GET", e))
    }
}
