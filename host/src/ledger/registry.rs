//! Node membership in distributed mode: which nodes are alive, and which
//! plugins (queue groups) with which topic patterns they serve.
//!
//! Every node writes, on each heartbeat, in one Lua script:
//!
//! - `anocast:{nodes}:<node-id>`: its [`NodeInfo`] as JSON, signed by the
//!   node's key as an `anocast-node-v2` statement (`anocast_wire::statement`)
//!   with the time of signing, with a time-to-live of [`Liveness::ttl`];
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
//!
//! Whoever can write to Redis can write entries, so a reader believes only
//! entries that are signed, fresh (signed within [`STALE_AFTER`] plus two
//! time-to-lives), within bounds (at most [`MAX_NODES`] nodes,
//! [`MAX_PLUGINS`] plugins a node, [`MAX_TOPICS`] patterns a plugin, 64 KiB
//! an entry), whose names pass the name rules, and whose key its
//! [`EntryTrust`] trusts for that node id. Every other entry is ignored
//! whole, counted and logged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::Script;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use anocast_wire::{PublicKey, names};

use crate::topic::Pattern;

const NODES: &str = "anocast:{nodes}";

/// Most live nodes read from the registry.
pub const MAX_NODES: usize = 1024;
/// Most plugins one node's entry may list.
pub const MAX_PLUGINS: usize = 256;
/// Most topic patterns one plugin may list.
pub const MAX_TOPICS: usize = names::MAX_PATTERNS;
/// How much older than two time-to-lives an entry's signature may be (for
/// clocks that disagree).
pub const STALE_AFTER: Duration = Duration::from_secs(30);

/// How a registry signs this node's entry and judges the others'.
pub trait EntryTrust: Send + Sync {
    /// Signs `text` (this node's entry as JSON) as a statement.
    fn seal(&self, text: &str) -> Result<String, anocast_wire::WireError>;
    /// Whether an entry that `key` signed for `node` is believed.
    fn accepts(&self, node: &str, key: &PublicKey) -> bool;
    /// Counts an entry that was not believed.
    fn rejected(&self);
}

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
local most = tonumber(ARGV[2])
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf', 'LIMIT', 0, tonumber(ARGV[1]))) do
  local entry = redis.call('GET', KEYS[1] .. ':' .. id)
  if entry and string.len(entry) <= most then table.insert(out, entry) end
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
    /// Its public signing key (`ed25519:<hex>`), which signs the entry.
    pub key: String,
    /// Its plugins.
    pub plugins: Vec<PluginEntry>,
    /// When the entry was signed (Unix milliseconds; set on each heartbeat).
    #[serde(default)]
    pub signed_ms: u64,
}

impl NodeInfo {
    /// Checks every name the entry holds (node id, plugin names, versions,
    /// topic patterns) by the project's one set of rules, and the bounds
    /// on how much it lists: an entry that fails is ignored whole, so that
    /// no bad name reaches a dispatch.
    pub fn check(&self) -> Result<(), String> {
        names::check_node_id(&self.id).map_err(|e| e.to_string())?;
        if self.plugins.len() > MAX_PLUGINS {
            return Err(format!("more than {MAX_PLUGINS} plugins"));
        }
        for plugin in &self.plugins {
            names::check_plugin_name(&plugin.name).map_err(|e| e.to_string())?;
            names::check_version(&plugin.version).map_err(|e| e.to_string())?;
            if plugin.topics.len() > MAX_TOPICS {
                return Err(format!("plugin {} has more than {MAX_TOPICS} topic patterns", plugin.name));
            }
            plugin.topics.iter().try_for_each(|t| names::check_pattern(t)).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Reads a registry value: a signed statement whose JSON names the
    /// key that signed it, checked by [`NodeInfo::check`], signed at most
    /// `max_age` ago (and not further ahead than [`STALE_AFTER`]).
    pub fn open(value: &str, max_age: Duration, now_ms: u64) -> Result<(NodeInfo, PublicKey), String> {
        let (key, text) =
            anocast_wire::statement::open(anocast_wire::statement::NODE, value).map_err(|e| e.to_string())?;
        let info: NodeInfo = serde_json::from_str(text).map_err(|e| format!("not a node entry: {e}"))?;
        if PublicKey::parse(&info.key).ok() != Some(key) {
            return Err("signed by another key than the one it names".into());
        }
        info.check()?;
        let (age, ahead) = (now_ms.saturating_sub(info.signed_ms), info.signed_ms.saturating_sub(now_ms));
        if age > max_age.as_millis() as u64 || ahead > STALE_AFTER.as_millis() as u64 {
            return Err(format!("signed {age} ms ago: stale, or replayed"));
        }
        Ok((info, key))
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
    /// The public key that signed a live node's entry.
    fn node_key(&self, node: &str) -> Option<PublicKey>;
}

struct Snapshot {
    at: Instant,
    nodes: BTreeMap<String, NodeInfo>,
    /// The key that signed each node's entry.
    keys: BTreeMap<String, PublicKey>,
    /// Queue group (plugin name) -> the union of its patterns on live nodes.
    groups: BTreeMap<String, Vec<Pattern>>,
}

/// The registry in Redis. Dropping it stops its heartbeat and refresh
/// tasks and (for a node that registered) removes the node's entry.
pub struct RedisRegistry {
    snapshot: Arc<ArcSwapOption<Snapshot>>,
    /// This node's entry, signed anew by each heartbeat.
    me: Arc<ArcSwapOption<NodeInfo>>,
    trust: Arc<dyn EntryTrust>,
    conn: ConnectionManager,
    liveness: Liveness,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    leave: Option<ConnectionManager>,
}

impl RedisRegistry {
    /// Starts refreshing the snapshot, believing the entries `trust`
    /// accepts; with `me`, also registers this node (its entry signed by
    /// `trust`) and keeps its entry alive. The first refresh (and
    /// heartbeat) is done before this returns.
    pub async fn start(
        conn: ConnectionManager,
        me: Option<NodeInfo>,
        liveness: Liveness,
        trust: Arc<dyn EntryTrust>,
    ) -> Self {
        let snapshot = Arc::new(ArcSwapOption::empty());
        let current: Arc<ArcSwapOption<NodeInfo>> = Arc::new(ArcSwapOption::empty());
        let mut tasks = Vec::new();
        let mut leave = None;
        if let Some(me) = me {
            current.store(Some(Arc::new(me)));
            let (mut c, entry, signer) = (conn.clone(), current.clone(), trust.clone());
            if let Some(entry) = entry.load_full()
                && let Err(err) = heartbeat(&mut c, &entry, &*signer, liveness.ttl).await
            {
                tracing::warn!(%err, "first heartbeat to Redis failed; retrying");
            }
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(liveness.heartbeat);
                loop {
                    tick.tick().await;
                    let Some(entry) = entry.load_full() else { continue };
                    if let Err(err) = heartbeat(&mut c, &entry, &*signer, liveness.ttl).await {
                        tracing::warn!(%err, "heartbeat to Redis failed");
                    }
                }
            }));
            leave = Some(conn.clone());
        }
        let mut c = conn.clone();
        refresh(&mut c, &snapshot, &*trust, liveness).await;
        let (target, judge) = (snapshot.clone(), trust.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(liveness.refresh);
            loop {
                tick.tick().await;
                refresh(&mut c, &target, &*judge, liveness).await;
            }
        }));
        RedisRegistry { snapshot, me: current, trust, conn, liveness, tasks, leave }
    }

    /// Replaces this node's entry (its plugins changed) and writes it at
    /// once, so that dispatchers see it within one refresh. Only for a
    /// registry started with an entry.
    pub async fn update(&self, me: &NodeInfo) {
        if self.me.load().is_none() {
            return;
        }
        self.me.store(Some(Arc::new(me.clone())));
        let mut conn = self.conn.clone();
        if let Err(err) = heartbeat(&mut conn, me, &*self.trust, self.liveness.ttl).await {
            tracing::warn!(%err, "could not publish this node's new plugins; the next heartbeat will");
        }
        // This node's own view of the mesh shows the change at once.
        refresh(&mut conn, &self.snapshot, &*self.trust, self.liveness).await;
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

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// Signs `me` as of now and writes it.
async fn heartbeat(
    conn: &mut ConnectionManager,
    me: &NodeInfo,
    trust: &dyn EntryTrust,
    ttl: Duration,
) -> anyhow::Result<()> {
    let info = NodeInfo { signed_ms: now_ms(), ..me.clone() };
    let json = serde_json::to_string(&info)?;
    let value = trust.seal(&json)?;
    let _: i64 = Script::new(HEARTBEAT)
        .key(NODES)
        .arg(&info.id)
        .arg(value)
        .arg(ttl.as_millis() as u64)
        .invoke_async(conn)
        .await?;
    Ok(())
}

async fn refresh(
    conn: &mut ConnectionManager,
    target: &ArcSwapOption<Snapshot>,
    trust: &dyn EntryTrust,
    liveness: Liveness,
) {
    let entries: Vec<String> = match Script::new(LIVE)
        .key(NODES)
        .arg(MAX_NODES)
        .arg(anocast_wire::statement::MAX_STATEMENT)
        .invoke_async(conn)
        .await
    {
        Ok(entries) => entries,
        Err(err) => {
            tracing::debug!(%err, "could not read the node registry");
            return;
        }
    };
    let mut snapshot =
        Snapshot { at: Instant::now(), nodes: BTreeMap::new(), keys: BTreeMap::new(), groups: BTreeMap::new() };
    let (max_age, now) = (liveness.ttl * 2 + STALE_AFTER, now_ms());
    for entry in entries {
        let (info, key) = match NodeInfo::open(&entry, max_age, now) {
            Ok(opened) => opened,
            Err(err) => {
                trust.rejected();
                crate::error::warn_limited!(%err, "ignored a registry entry");
                continue;
            }
        };
        if !trust.accepts(&info.id, &key) {
            trust.rejected();
            crate::error::warn_limited!(node = info.id, %key, "ignored a registry entry signed by a key not trusted for its node id");
            continue;
        }
        for plugin in &info.plugins {
            let patterns = snapshot.groups.entry(plugin.name.clone()).or_default();
            patterns.extend(plugin.topics.iter().filter_map(|t| Pattern::parse(t).ok()));
        }
        snapshot.keys.insert(info.id.clone(), key);
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

    fn node_key(&self, node: &str) -> Option<PublicKey> {
        self.fresh()?.keys.get(node).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, name: &str, version: &str, topic: &str) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            key: key().public().to_string(),
            plugins: vec![PluginEntry { name: name.into(), version: version.into(), topics: vec![topic.into()] }],
            signed_ms: 1_700_000_000_000,
        }
    }

    fn key() -> anocast_wire::NodeKey {
        anocast_wire::NodeKey::from_seed(&[11; 32]).expect("key")
    }

    fn sealed(info: &NodeInfo) -> String {
        let json = serde_json::to_string(info).expect("serializes");
        anocast_wire::statement::seal(anocast_wire::statement::NODE, &json, &key()).expect("signs")
    }

    #[test]
    fn entries_must_be_signed_by_the_key_they_name_fresh_and_bounded() {
        const NOW: u64 = 1_700_000_000_000;
        let age = Duration::from_secs(10);
        let good = entry("node-1", "echo", "1.0.0", "echo.>");
        let (info, signer) = NodeInfo::open(&sealed(&good), age, NOW).expect("a good entry");
        assert_eq!((info, signer), (good.clone(), key().public()));
        let json = serde_json::to_string(&good).expect("serializes");
        assert!(NodeInfo::open(&json, age, NOW).expect_err("refused").contains("not a signed statement"), "unsigned");
        let other = anocast_wire::NodeKey::from_seed(&[12; 32]).expect("key");
        let by_other = anocast_wire::statement::seal(anocast_wire::statement::NODE, &json, &other).expect("signs");
        assert!(NodeInfo::open(&by_other, age, NOW).expect_err("refused").contains("another key"));
        let tampered = sealed(&good).replace("echo.>", "echo.*");
        assert!(NodeInfo::open(&tampered, age, NOW).expect_err("refused").contains("bad signature"));
        let old = NodeInfo { signed_ms: NOW - 11_000, ..good.clone() };
        assert!(NodeInfo::open(&sealed(&old), age, NOW).expect_err("refused").contains("stale"));
        let ahead = NodeInfo { signed_ms: NOW + 31_000, ..good.clone() };
        assert!(NodeInfo::open(&sealed(&ahead), age, NOW).is_err(), "signed in the future");
        let many = NodeInfo { plugins: vec![good.plugins[0].clone(); MAX_PLUGINS + 1], ..good.clone() };
        assert!(NodeInfo::open(&sealed(&many), age, NOW).expect_err("refused").contains("plugins"));
        let mut topics = good.clone();
        topics.plugins[0].topics = vec!["a".into(); MAX_TOPICS + 1];
        assert!(NodeInfo::open(&sealed(&topics), age, NOW).expect_err("refused").contains("topic patterns"));
        let bad = entry("node\n1", "echo", "1", "echo");
        assert!(NodeInfo::open(&sealed(&bad), age, NOW).is_err());
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
