//! Node membership in distributed mode: which nodes are alive, and which
//! plugins (queue groups) with which topic patterns they serve.
//!
//! Every node with plugins writes, on each heartbeat, in one Lua script:
//!
//! - `anocast:{nodes}:<node-id>`: its [`NodeInfo`] as JSON, with a
//!   time-to-live of [`Liveness::ttl`];
//! - its id in the sorted set `anocast:{nodes}`, scored with the time its
//!   entry expires (Redis server time, so node clocks do not matter); the
//!   set itself carries the same time-to-live, renewed by every heartbeat.
//!
//! Dispatchers read the live entries every [`Liveness::refresh`] into a
//! snapshot, and use it without a round trip per dispatch: to know how many
//! receiving groups to expect (the interest window closes once all have
//! acknowledged), and to tell that a declared worker's node has died.
//!
//! A node that has just joined is seen by other dispatchers within one
//! refresh; until then they do not wait for its plugins, whose late
//! declarations are refused (never half-counted).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::Script;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use anocast_wire::names;

use crate::topic::Pattern;

const NODES: &str = "anocast:{nodes}";

/// Writes a node's entry and prunes expired ones.
pub(super) const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local ttl = tonumber(ARGV[3])
redis.call('SET', KEYS[1] .. ':' .. ARGV[1], ARGV[2], 'PX', ttl)
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], ttl)
return 1";

/// Returns the entries of live nodes.
pub(super) const LIVE: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) do
  local entry = redis.call('GET', KEYS[1] .. ':' .. id)
  if entry then table.insert(out, entry) end
end
return out";

/// Removes a node's entry (on a clean shutdown).
pub(super) const LEAVE: &str = r"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[1] .. ':' .. ARGV[1])
return 1";

/// What a node says of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeInfo {
    /// The node's id.
    pub id: String,
    /// Its public signing key (`ed25519:<hex>`).
    #[serde(default)]
    pub key: String,
    /// Its plugins.
    pub plugins: Vec<PluginEntry>,
}

impl NodeInfo {
    /// Checks every name the entry holds (node id, plugin names, versions,
    /// topic patterns) by the project's one set of rules: an entry that
    /// fails is ignored whole, so that no bad name reaches a dispatch.
    pub fn check(&self) -> Result<(), anocast_wire::NameError> {
        names::check_node_id(&self.id)?;
        for plugin in &self.plugins {
            names::check_plugin_name(&plugin.name)?;
            names::check_version(&plugin.version)?;
            plugin.topics.iter().try_for_each(|t| names::check_pattern(t))?;
        }
        Ok(())
    }
}

/// One plugin of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginEntry {
    /// Name (the queue group).
    pub name: String,
    /// Version.
    pub version: String,
    /// Topic patterns.
    pub topics: Vec<String>,
}

/// How fast a dead node is noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// How long a node's entry lives without a heartbeat (default 3 s).
    pub ttl: Duration,
    /// How often a node renews its entry (default a third of `ttl`).
    pub heartbeat: Duration,
    /// How often dispatchers re-read the entries (default 500 ms).
    pub refresh: Duration,
}

impl Liveness {
    /// Timings derived from the time-to-live of an entry.
    pub fn from_ttl(ttl: Duration) -> Self {
        Liveness { ttl, heartbeat: ttl / 3, refresh: (ttl / 6).min(Duration::from_millis(500)) }
    }
}

impl Default for Liveness {
    fn default() -> Self {
        Self::from_ttl(Duration::from_secs(3))
    }
}

/// What dispatchers know of the live nodes.
pub trait Registry: Send + Sync {
    /// The queue groups (plugin names) on live nodes that subscribe to
    /// `topic`, when that is known (fresh information).
    fn expected_groups(&self, topic: &str) -> Option<Vec<String>>;
    /// Whether `node` is alive as far as is known; `true` when nothing fresh
    /// is known (a Redis outage must not declare every node dead).
    fn is_alive(&self, node: &str) -> bool;
    /// How often to ask [`Registry::is_alive`] about declared workers.
    fn check_interval(&self) -> Duration;
    /// The live nodes as last seen, sorted by id.
    fn nodes(&self) -> Vec<NodeInfo>;
    /// The public key a live node registered, as text.
    fn node_key(&self, node: &str) -> Option<String>;
}

struct Snapshot {
    at: Instant,
    nodes: BTreeMap<String, NodeInfo>,
    /// Queue group (plugin name) -> the union of its patterns on live nodes.
    groups: BTreeMap<String, Vec<Pattern>>,
}

/// The registry in Redis. Dropping it stops its heartbeat and refresh
/// tasks and (for a node that registered) removes the node's entry.
pub struct RedisRegistry {
    snapshot: Arc<ArcSwapOption<Snapshot>>,
    /// This node's entry (id, JSON), renewed by the heartbeat.
    me: Arc<ArcSwapOption<(String, String)>>,
    conn: ConnectionManager,
    liveness: Liveness,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    leave: Option<ConnectionManager>,
}

impl RedisRegistry {
    /// Starts refreshing the snapshot; with `me`, also registers this node
    /// and keeps its entry alive. The first refresh (and heartbeat) is done
    /// before this returns.
    pub async fn start(conn: ConnectionManager, me: Option<NodeInfo>, liveness: Liveness) -> Self {
        let snapshot = Arc::new(ArcSwapOption::empty());
        let current: Arc<ArcSwapOption<(String, String)>> = Arc::new(ArcSwapOption::empty());
        let mut tasks = Vec::new();
        let mut leave = None;
        if let Some(me) = me {
            let json = serde_json::to_string(&me).expect("node info serializes");
            current.store(Some(Arc::new((me.id.clone(), json))));
            let (mut c, entry) = (conn.clone(), current.clone());
            if let Some(entry) = entry.load_full()
                && let Err(err) = heartbeat(&mut c, &entry.0, &entry.1, liveness.ttl).await
            {
                tracing::warn!(%err, "first heartbeat to Redis failed; retrying");
            }
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(liveness.heartbeat);
                loop {
                    tick.tick().await;
                    let Some(entry) = entry.load_full() else { continue };
                    if let Err(err) = heartbeat(&mut c, &entry.0, &entry.1, liveness.ttl).await {
                        tracing::warn!(%err, "heartbeat to Redis failed");
                    }
                }
            }));
            leave = Some(conn.clone());
        }
        let mut c = conn.clone();
        refresh(&mut c, &snapshot).await;
        let target = snapshot.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(liveness.refresh);
            loop {
                tick.tick().await;
                refresh(&mut c, &target).await;
            }
        }));
        RedisRegistry { snapshot, me: current, conn, liveness, tasks, leave }
    }

    /// Replaces this node's entry (its plugins changed) and writes it at
    /// once, so that dispatchers see it within one refresh. Only for a
    /// registry started with an entry.
    pub async fn update(&self, me: &NodeInfo) {
        if self.me.load().is_none() {
            return;
        }
        let json = serde_json::to_string(me).expect("node info serializes");
        self.me.store(Some(Arc::new((me.id.clone(), json.clone()))));
        let mut conn = self.conn.clone();
        if let Err(err) = heartbeat(&mut conn, &me.id, &json, self.liveness.ttl).await {
            tracing::warn!(%err, "could not publish this node's new plugins; the next heartbeat will");
        }
        // This node's own view of the mesh shows the change at once.
        refresh(&mut conn, &self.snapshot).await;
    }

    /// Removes this node's entry now (a clean shutdown), so that dispatchers
    /// stop expecting it at once.
    pub async fn leave(&self, id: &str) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(mut conn) = self.leave.clone() {
            let result: Result<i64, _> = Script::new(LEAVE).key(NODES).arg(id).invoke_async(&mut conn).await;
            if let Err(err) = result {
                tracing::warn!(%err, "could not remove this node from the registry");
            }
        }
    }

    fn fresh(&self) -> Option<Arc<Snapshot>> {
        self.snapshot.load_full().filter(|s| s.at.elapsed() < self.liveness.ttl)
    }
}

impl Drop for RedisRegistry {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn heartbeat(conn: &mut ConnectionManager, id: &str, json: &str, ttl: Duration) -> redis::RedisResult<i64> {
    Script::new(HEARTBEAT).key(NODES).arg(id).arg(json).arg(ttl.as_millis() as u64).invoke_async(conn).await
}

async fn refresh(conn: &mut ConnectionManager, target: &ArcSwapOption<Snapshot>) {
    let entries: Vec<String> = match Script::new(LIVE).key(NODES).invoke_async(conn).await {
        Ok(entries) => entries,
        Err(err) => {
            tracing::debug!(%err, "could not read the node registry");
            return;
        }
    };
    let mut snapshot = Snapshot { at: Instant::now(), nodes: BTreeMap::new(), groups: BTreeMap::new() };
    for entry in entries {
        let info = match serde_json::from_str::<NodeInfo>(&entry) {
            Ok(info) => info,
            Err(err) => {
                tracing::warn!(%err, "ignored a malformed registry entry");
                continue;
            }
        };
        if let Err(err) = info.check() {
            tracing::warn!(%err, "ignored a registry entry with an invalid name");
            continue;
        }
        for plugin in &info.plugins {
            let patterns = snapshot.groups.entry(plugin.name.clone()).or_default();
            patterns.extend(plugin.topics.iter().filter_map(|t| Pattern::parse(t).ok()));
        }
        snapshot.nodes.insert(info.id.clone(), info);
    }
    target.store(Some(Arc::new(snapshot)));
}

impl Registry for RedisRegistry {
    fn expected_groups(&self, topic: &str) -> Option<Vec<String>> {
        let snapshot = self.fresh()?;
        let matching = snapshot.groups.iter().filter(|(_, patterns)| patterns.iter().any(|p| p.matches(topic)));
        Some(matching.map(|(name, _)| name.clone()).collect())
    }

    fn is_alive(&self, node: &str) -> bool {
        self.fresh().is_none_or(|s| s.nodes.contains_key(node))
    }

    fn check_interval(&self) -> Duration {
        self.liveness.refresh
    }

    fn nodes(&self) -> Vec<NodeInfo> {
        self.snapshot.load_full().map(|s| s.nodes.values().cloned().collect()).unwrap_or_default()
    }

    fn node_key(&self, node: &str) -> Option<String> {
        self.fresh()?.nodes.get(node).map(|n| n.key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, name: &str, version: &str, topic: &str) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            key: String::new(),
            plugins: vec![PluginEntry { name: name.into(), version: version.into(), topics: vec![topic.into()] }],
        }
    }

    #[test]
    fn registry_entries_are_checked_by_the_name_rules() {
        assert!(entry("node-1", "echo", "1.0.0", "echo.>").check().is_ok());
        for bad in [
            entry("node\n1", "echo", "1", "echo"),
            entry("n", "echo\nx", "1", "echo"),
            entry("n", "Echo", "1", "echo"),
            entry("n", "echo", "1 0", "echo"),
            entry("n", "echo", "1", "echo..x"),
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }
}
