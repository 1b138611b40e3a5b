//! Node identity and trust, for distributed mode.
//!
//! Every node and every plugin-less client signs with an ed25519 key of
//! its own (the plugins never see it): generated on first start into the
//! data folder (`node.key`, owner-only), or given with `--key FILE`. It
//! signs the tasks it dispatches, its settle decisions, its workers'
//! replies and declarations, and its registry entry.
//!
//! What a key may do is a *role*: `dispatch` (send tasks and settle
//! decisions that nodes act on) and `reply` (answer tasks, declare on
//! interest lists, register plugins in the mesh). A node trusts its own
//! key for both; the keys listed with `--trust PATH` (a file, or a folder
//! of files, of lines `ed25519:<hex> <node-id> <roles>`: the key is trusted
//! only for that node id; `*` instead of a node id, written out and warned
//! about, trusts it for every node id; roles are `reply`, `dispatch` or
//! `reply,dispatch`) for what their line says; and, only when asked with
//! `--trust-mesh` (development), every key that signs its own registry
//! entry, for both roles and the node id of that entry.
//!
//! Every rejection is counted in [`SecurityStats`] (shown by
//! `GET /v1/plugins`) and logged; it changes neither an interest list nor
//! an outcome. The formats are in the `anocast-wire` crate and
//! `docs/protocol.md`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use anocast_wire::{NodeKey, PublicKey, Worker};
use anyhow::{Context, bail};

use crate::ledger::{EntryTrust, Registry};

/// The name of the key file in a node's data folder.
pub(crate) const KEY_FILE: &str = "node.key";

/// Where a node's data folder is by default:
/// `$XDG_DATA_HOME/anocast/<node-id>`, else `~/.local/share/anocast/<node-id>`.
pub fn default_data_dir(node_id: &str) -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from(".anocast"));
    base.join("anocast").join(node_id)
}

/// Refuses `path` unless this user owns it and nobody else may write it
/// (`private`: nor read it), as OpenSSH's StrictModes does for its keys.
#[cfg(unix)]
fn check_owned(path: &Path, what: &str, private: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read {what} {}", path.display()))?;
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        bail!("{what} {} belongs to user {}, not to this user ({me}); chown it", path.display(), meta.uid());
    }
    let mode = meta.mode() & 0o777;
    let (forbidden, fix) = if private { (0o077, "chmod go-rwx") } else { (0o022, "chmod go-w") };
    if mode & forbidden != 0 {
        let who = if private { "readable or writable" } else { "writable" };
        bail!("{what} {} is {who} by others (mode {mode:o}); {fix} {}", path.display(), path.display());
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_owned(_path: &Path, _what: &str, _private: bool) -> anyhow::Result<()> {
    Ok(())
}

/// Reads a private key file, refusing one that another user owns or that
/// others may read or write.
pub(crate) fn read_key(path: &Path) -> anyhow::Result<NodeKey> {
    check_owned(path, "key file", true)?;
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read key file {}", path.display()))?;
    NodeKey::from_pem(&text).with_context(|| format!("invalid key file {}", path.display()))
}

/// The roles a node's key is trusted for by default in the line
/// [`write_key`] writes: it answers tasks and dispatches sub-tasks.
pub const NODE_ROLES: &str = "reply,dispatch";

/// Writes `key` to a new owner-only file at `path` (never over an existing
/// one), and its trust line (`<key> <node-id or *> <roles>`) to `path.pub`.
pub fn write_key(path: &Path, key: &NodeKey, node_id: Option<&str>, roles: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).with_context(|| format!("cannot create key file {}", path.display()))?;
    file.write_all(key.to_pem()?.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    anyhow::ensure!(parse_roles(roles).is_some(), "unknown roles {roles:?}: write reply, dispatch or reply,dispatch");
    let public = format!("{} {} {roles}\n", key.public(), node_id.unwrap_or("*"));
    let pub_path = public_key_path(path);
    std::fs::write(&pub_path, public).with_context(|| format!("cannot write {}", pub_path.display()))?;
    Ok(())
}

/// `path` with `.pub` appended.
pub fn public_key_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// The key in `data_dir`, made (with the folder, owner-only) on first use.
pub(crate) fn data_dir_key(data_dir: &Path, node_id: &str) -> anyhow::Result<NodeKey> {
    let path = data_dir.join(KEY_FILE);
    if path.exists() {
        // Someone who may write the folder may swap the key.
        check_owned(data_dir, "data folder", false)?;
        return read_key(&path);
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(data_dir).with_context(|| format!("cannot create the data folder {}", data_dir.display()))?;
    check_owned(data_dir, "data folder", false)?;
    let key = NodeKey::generate()?;
    write_key(&path, &key, Some(node_id), NODE_ROLES)?;
    tracing::info!(key = %key.public(), file = %path.display(), "generated this node's signing key");
    Ok(key)
}

/// A running watch of the trust files; dropping it stops watching.
pub struct TrustWatch {
    _debouncer: notify_debouncer_full::Debouncer<
        notify_debouncer_full::notify::RecommendedWatcher,
        notify_debouncer_full::RecommendedCache,
    >,
}

/// What a trusted key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Send tasks and settle decisions.
    Dispatch,
    /// Answer tasks, declare, and register in the mesh.
    Reply,
}

impl Role {
    fn bit(self) -> u8 {
        match self {
            Role::Dispatch => 1,
            Role::Reply => 2,
        }
    }
}

/// One trust line: for which node id (`None`: any) and which roles.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    node: Option<String>,
    roles: u8,
}

/// The trusted keys, and whether to trust the mesh's registry too.
#[derive(Debug, Default)]
pub(crate) struct TrustStore {
    /// Key -> what its lines grant.
    keys: HashMap<PublicKey, Vec<Grant>>,
    mesh: bool,
}

/// Reads `reply`, `dispatch` or both, comma-separated.
fn parse_roles(text: &str) -> Option<u8> {
    let mut roles = 0;
    for role in text.split(',') {
        roles |= match role {
            "reply" => Role::Reply.bit(),
            "dispatch" => Role::Dispatch.bit(),
            _ => return None,
        };
    }
    Some(roles)
}

impl TrustStore {
    /// Reads every path (a file, or a folder whose files are all read);
    /// `mesh`: also trust the keys of the mesh's registered nodes.
    pub(crate) fn load(paths: &[PathBuf], mesh: bool) -> anyhow::Result<Self> {
        let mut store = TrustStore { keys: HashMap::new(), mesh };
        for path in paths {
            if path.is_dir() {
                let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                    .with_context(|| format!("cannot read trust folder {}", path.display()))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_file())
                    .collect();
                files.sort();
                for file in files {
                    store.read_file(&file)?;
                }
            } else {
                store.read_file(path)?;
            }
        }
        Ok(store)
    }

    fn read_file(&mut self, path: &Path) -> anyhow::Result<()> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read trust file {}", path.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let mut fields = line.split_whitespace();
            let key = fields.next().unwrap_or_default();
            let (node, roles) = (fields.next(), fields.next());
            let at = format!("{}:{}", path.display(), n + 1);
            if fields.next().is_some() {
                bail!(
                    "{at}: expected `ed25519:<hex> <node-id> <roles>` (`*` for any node id; roles reply, dispatch or reply,dispatch)"
                );
            }
            let key = PublicKey::parse(key).map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
            let Some(node) = node else {
                bail!(
                    "{at}: a key without a node id: name the node it may sign for, or write `{key} * reply,dispatch` \
                     to trust it for every node id"
                )
            };
            let node = match node {
                "*" => None,
                node => {
                    anocast_wire::names::check_node_id(node).with_context(|| at.clone())?;
                    Some(node)
                }
            };
            let Some(roles) = roles else {
                bail!(
                    "{at}: say what the key may do: `{key} {} reply` for a node's replies, `dispatch` for a \
                     dispatcher or plugin-less client, `reply,dispatch` for a node that does both",
                    node.unwrap_or("*")
                )
            };
            let roles = parse_roles(roles).ok_or_else(|| {
                anyhow::anyhow!("{at}: unknown roles {roles:?}: write reply, dispatch or reply,dispatch")
            })?;
            if node.is_none() {
                tracing::warn!(
                    file = %path.display(),
                    line = n + 1,
                    %key,
                    "a trust line trusts a key for every node id (`*`): whoever holds it may speak for any node"
                );
            }
            self.add(key, node, roles);
        }
        Ok(())
    }

    /// Trusts `key` for `roles` (bits of [`Role`]), for `node` only or
    /// (`None`) for any node id.
    pub fn add(&mut self, key: PublicKey, node: Option<&str>, roles: u8) {
        self.keys.entry(key).or_default().push(Grant { node: node.map(str::to_owned), roles });
    }

    /// Whether a line trusts `key` for `role` as `node`.
    fn grants(&self, key: &PublicKey, node: &str, role: Role) -> bool {
        self.keys.get(key).is_some_and(|grants| {
            grants.iter().any(|g| g.roles & role.bit() != 0 && g.node.as_deref().is_none_or(|n| n == node))
        })
    }

    /// Whether the mesh's registered keys are trusted too.
    pub fn trusts_mesh(&self) -> bool {
        self.mesh
    }
}

/// Rejections counted by a node.
#[derive(Debug, Default, serde::Serialize)]
pub struct SecurityStats {
    /// Replies that are not a well-formed signed envelope (unsigned ones
    /// included).
    pub malformed: AtomicU64,
    /// Replies whose signature does not verify (tampered or forged).
    pub bad_signature: AtomicU64,
    /// Replies signed by a key this node does not trust for that node id.
    pub untrusted_key: AtomicU64,
    /// Replies made for another request or topic (replayed).
    pub replayed: AtomicU64,
    /// Second replies of one signer for one request.
    pub duplicate: AtomicU64,
    /// Interest list entries that are not a trusted signer's declaration.
    pub untrusted_declarations: AtomicU64,
    /// Declarations acknowledged by their worker whose interest list entry
    /// had disappeared (the list was tampered with); they are awaited.
    pub vanished_declarations: AtomicU64,
    /// Replies whose timestamp was further from this node's clock than
    /// the allowed skew.
    pub clock_skew: AtomicU64,
    /// Tasks that could not be decoded, or had no reply subject.
    pub malformed_tasks: AtomicU64,
    /// Tasks whose deadline lay further ahead than any dispatch may ask.
    pub far_deadlines: AtomicU64,
    /// Tasks answered `busy` because the node had its most tasks in flight.
    pub busy: AtomicU64,
    /// Tasks whose signature does not verify (forged or altered).
    pub forged_tasks: AtomicU64,
    /// Tasks signed by a key this node does not trust to dispatch (answered
    /// `untrusted`, nothing ran).
    pub untrusted_dispatchers: AtomicU64,
    /// Tasks received a second time (replayed).
    pub replayed_tasks: AtomicU64,
    /// Messages of another protocol version.
    pub old_protocol: AtomicU64,
    /// Settle decisions whose signature does not verify, from a key not
    /// trusted to dispatch, or from another key than the root dispatcher's.
    pub forged_decisions: AtomicU64,
    /// Registry entries and lifecycle events that are unsigned, stale,
    /// malformed, out of bounds or signed by an untrusted key.
    pub untrusted_entries: AtomicU64,
}

impl SecurityStats {
    /// Adds one to `counter`.
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A node's identity and what it trusts. Shared by its bus (which signs
/// and verifies replies) and its dispatcher (which checks declarations).
pub struct Security {
    key: NodeKey,
    node_id: String,
    /// The trusted keys, swapped whole when the trust files change.
    store: arc_swap::ArcSwap<TrustStore>,
    /// Where the trust files are, to read them again.
    paths: Vec<PathBuf>,
    registry: OnceLock<Arc<dyn Registry>>,
    /// What was rejected.
    pub stats: SecurityStats,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security").field("key", &self.key).field("node_id", &self.node_id).finish_non_exhaustive()
    }
}

impl Security {
    /// A node signing with `key` as `node_id`, trusting `store`.
    pub(crate) fn new(key: NodeKey, node_id: &str, store: TrustStore, paths: Vec<PathBuf>) -> Self {
        Security {
            key,
            node_id: node_id.to_owned(),
            store: arc_swap::ArcSwap::from_pointee(store),
            paths,
            registry: OnceLock::new(),
            stats: SecurityStats::default(),
        }
    }

    /// Reads the trust files again; on an error the keys trusted so far
    /// stay, and the error says why.
    pub(crate) fn reload(&self) -> anyhow::Result<usize> {
        let mesh = self.store.load().mesh;
        let store = TrustStore::load(&self.paths, mesh)?;
        let count = store.keys.len();
        self.store.store(Arc::new(store));
        Ok(count)
    }

    /// Watches the trust files (their folders, so that a file replaced by
    /// an editor's rename is seen) and reloads them when they change: a
    /// key is revoked by deleting its line, without a restart. `None` when
    /// there are no trust files.
    pub(crate) fn watch(self: &Arc<Self>) -> anyhow::Result<Option<TrustWatch>> {
        use notify_debouncer_full::notify::{EventKind, RecursiveMode};
        if self.paths.is_empty() {
            return Ok(None);
        }
        let me = Arc::downgrade(self);
        let watched: Vec<PathBuf> = self.paths.iter().map(|p| std::fs::canonicalize(p).unwrap_or(p.clone())).collect();
        let relevant = watched.clone();
        let mut debouncer = notify_debouncer_full::new_debouncer(
            std::time::Duration::from_millis(100),
            None,
            move |result: notify_debouncer_full::DebounceEventResult| {
                let Ok(events) = result else { return };
                let touched = events.iter().any(|e| {
                    !matches!(e.kind, EventKind::Access(_))
                        && e.paths.iter().any(|p| relevant.iter().any(|r| p.starts_with(r) || p == r))
                });
                let Some(security) = me.upgrade().filter(|_| touched) else { return };
                match security.reload() {
                    Ok(keys) => tracing::info!(keys, "reloaded the trust files"),
                    Err(err) => tracing::warn!(
                        error = format!("{err:#}"),
                        "cannot reload the trust files; the keys trusted so far stay"
                    ),
                }
            },
        )
        .context("cannot watch the trust files")?;
        for path in &watched {
            let folder = if path.is_dir() { path.as_path() } else { path.parent().unwrap_or(Path::new(".")) };
            debouncer
                .watch(folder, RecursiveMode::NonRecursive)
                .with_context(|| format!("cannot watch {}", folder.display()))?;
        }
        Ok(Some(TrustWatch { _debouncer: debouncer }))
    }

    /// Where the mesh's registered keys are read (for `--trust-mesh`).
    pub fn set_registry(&self, registry: Arc<dyn Registry>) {
        let _ = self.registry.set(registry);
    }

    /// This node's signing key.
    pub fn key(&self) -> &NodeKey {
        &self.key
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Whether `worker`'s key is trusted to reply for its node.
    pub fn trusts(&self, worker: &Worker) -> bool {
        self.trusts_key(&worker.key, &worker.node, Role::Reply)
    }

    /// Whether `key` is trusted to dispatch as the node `dispatcher`.
    pub fn may_dispatch(&self, dispatcher: &str, key: &PublicKey) -> bool {
        self.trusts_key(key, dispatcher, Role::Dispatch)
    }

    /// Whether `key` is trusted for `role` as `node`: this node's own key,
    /// a trust line, or (with `--trust-mesh`) the key of `node`'s signed
    /// registry entry.
    pub fn trusts_key(&self, key: &PublicKey, node: &str, role: Role) -> bool {
        if node == self.node_id && *key == self.key.public() {
            return true;
        }
        let store = self.store.load();
        store.grants(key, node, role)
            || (store.trusts_mesh() && self.registry.get().and_then(|r| r.node_key(node)).is_some_and(|k| k == *key))
    }

    /// Whether a registry entry or lifecycle event that `key` signed for
    /// `node` is believed: with `--trust-mesh` any self-signed one, else
    /// only one from a key trusted to reply as `node`.
    pub fn trusts_entry(&self, node: &str, key: &PublicKey) -> bool {
        let store = self.store.load();
        (node == self.node_id && *key == self.key.public())
            || store.trusts_mesh()
            || store.grants(key, node, Role::Reply)
    }
}

impl EntryTrust for Security {
    fn seal(&self, text: &str) -> Result<String, anocast_wire::WireError> {
        anocast_wire::statement::seal(anocast_wire::statement::NODE, text, &self.key)
    }

    fn accepts(&self, node: &str, key: &PublicKey) -> bool {
        self.trusts_entry(node, key)
    }

    fn rejected(&self) {
        SecurityStats::count(&self.stats.untrusted_entries);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch folder of this test's own, removed at the end.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("anocast-trust-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("scratch folder");
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const KEY: &str = "ed25519:d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    #[test]
    fn trust_lines_name_a_node_and_roles() {
        let scratch = Scratch::new("lines");
        let file = scratch.0.join("trusted");
        let load = |text: String| {
            std::fs::write(&file, text).expect("written");
            TrustStore::load(std::slice::from_ref(&file), false)
        };
        let err = load(format!("{KEY}\n")).expect_err("a bare key").to_string();
        assert!(err.contains("trusted:1: a key without a node id") && err.contains(&format!("{KEY} *")), "{err}");
        let err = load(format!("{KEY} node-a\n")).expect_err("no roles").to_string();
        assert!(err.contains("say what the key may do") && err.contains(&format!("{KEY} node-a reply")), "{err}");
        let err = load(format!("{KEY} node-a admin\n")).expect_err("bad roles").to_string();
        assert!(err.contains("unknown roles \"admin\""), "{err}");
        let key = PublicKey::parse(KEY).expect("key");
        let store = load(format!("{KEY} * reply\n")).expect("a starred key");
        assert!(store.grants(&key, "node-a", Role::Reply) && store.grants(&key, "node-b", Role::Reply));
        assert!(!store.grants(&key, "node-a", Role::Dispatch), "reply does not give dispatch");
        let store = load(format!("{KEY} node-a dispatch\n{KEY} node-b reply,dispatch\n")).expect("bound keys");
        assert!(store.grants(&key, "node-a", Role::Dispatch) && !store.grants(&key, "node-a", Role::Reply));
        assert!(store.grants(&key, "node-b", Role::Reply) && store.grants(&key, "node-b", Role::Dispatch));
        assert!(!store.grants(&key, "node-c", Role::Dispatch), "another node id");
    }

    #[cfg(unix)]
    #[test]
    fn keys_and_data_folders_others_may_write_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let scratch = Scratch::new("modes");
        let data = scratch.0.join("data");
        let key = data_dir_key(&data, "node-a").expect("made on first use");
        assert_eq!(data_dir_key(&data, "node-a").expect("read again").public(), key.public());
        let mode = |path: &Path, mode: u32| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));

        mode(&data, 0o770).expect("chmod");
        let err = data_dir_key(&data, "node-a").expect_err("group-writable folder").to_string();
        assert!(err.contains("data folder") && err.contains("writable by others (mode 770)"), "{err}");
        mode(&data, 0o755).expect("chmod");
        assert!(data_dir_key(&data, "node-a").is_ok(), "a folder others may only read is fine");

        let file = data.join(KEY_FILE);
        mode(&file, 0o640).expect("chmod");
        let err = data_dir_key(&data, "node-a").expect_err("group-readable key").to_string();
        assert!(err.contains("key file") && err.contains("mode 640") && err.contains("chmod go-rwx"), "{err}");
        mode(&file, 0o600).expect("chmod");

        // Another user's key (only root can make one here).
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(&file, Some(4242), None).expect("chown");
            let err = data_dir_key(&data, "node-a").expect_err("another user's key").to_string();
            assert!(err.contains("belongs to user 4242"), "{err}");
        }
    }
}
