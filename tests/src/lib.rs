//! Helpers for anocast's integration tests: the paths of the guests built
//! from source by `build.rs`, plugin folders assembled from them, and a way
//! to run the `anocast` command.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anocast::{DispatchOptions, Host, HostConfig, NestingConfig, RuntimeConfig};

/// The allocator the `anocast` binary uses (`host/cli/src/main.rs`), so that
/// the benchmarks and tests run the host as it ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod bench;
pub mod servers;

/// Paths of the components built by `build.rs`.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

/// The sixteen echo guests (`echo`, `echo-2` ... `echo-16`), for fan-out.
pub const ECHOES: [&str; 16] = [
    guests::ECHO,
    guests::ECHO2,
    guests::ECHO3,
    guests::ECHO4,
    guests::ECHO5,
    guests::ECHO6,
    guests::ECHO7,
    guests::ECHO8,
    guests::ECHO9,
    guests::ECHO10,
    guests::ECHO11,
    guests::ECHO12,
    guests::ECHO13,
    guests::ECHO14,
    guests::ECHO15,
    guests::ECHO16,
];

/// A temporary plugins folder holding copies of some guests. Removed on drop.
pub struct PluginDir {
    dir: tempfile::TempDir,
}

impl PluginDir {
    /// A folder with each of `guests` (paths from [`guests`]) copied in.
    pub fn with(guests: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        for guest in guests {
            let name = Path::new(guest).file_name().ok_or_else(|| anyhow::anyhow!("no file name in {guest}"))?;
            std::fs::copy(guest, dir.path().join(name))?;
        }
        Ok(PluginDir { dir })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `bytes` into the folder as `name`.
    pub fn write(&self, name: &str, bytes: &[u8]) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes)?;
        Ok(path)
    }
}

/// A compiled-code cache shared by the tests that load big components
/// (Python, JavaScript), so that each is compiled once per checkout rather
/// than once per test.
pub fn shared_code_cache() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target").join("test-code-cache")
}

/// Starts an embedded host on `dir` with node id `test` and `runtime` limits.
pub async fn start_host(dir: &PluginDir, runtime: RuntimeConfig) -> anyhow::Result<Host> {
    start_host_with(dir, runtime, NestingConfig::default()).await
}

/// [`start_host`], with limits on nesting.
pub async fn start_host_with(dir: &PluginDir, runtime: RuntimeConfig, nesting: NestingConfig) -> anyhow::Result<Host> {
    let plugins = Some(dir.path().to_owned());
    Host::start(HostConfig { plugins, node_id: "test".into(), runtime, nesting, ..HostConfig::default() }).await
}

/// The payload (or, for an error partial, the error) of `plugin`'s partial
/// in an outcome's JSON; `null` when it has none.
pub fn payload_of<'a>(json: &'a serde_json::Value, plugin: &str) -> &'a serde_json::Value {
    let partials = json["partials"].as_array().map(Vec::as_slice).unwrap_or_default();
    let partial = partials.iter().find(|p| p["worker"].as_str().is_some_and(|w| w.contains(&format!("/{plugin}@"))));
    partial.map_or(&serde_json::Value::Null, |p| if p["ok"] == true { &p["payload"] } else { &p["error"] })
}

/// Dispatch options with the given grace and timeout, in milliseconds.
pub fn options(grace_ms: u64, timeout_ms: u64) -> DispatchOptions {
    DispatchOptions {
        grace: std::time::Duration::from_millis(grace_ms),
        timeout: std::time::Duration::from_millis(timeout_ms),
        ..DispatchOptions::default()
    }
}

/// Waits until `condition` holds, checking it at once and then again
/// after short pauses (1 ms, doubling up to 20 ms); fails, naming `what`,
/// when it still does not hold after `timeout`. An error from `condition`
/// fails at once.
pub async fn wait_until(
    what: &str,
    timeout: Duration,
    mut condition: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let until = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if condition().await? {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < until, "timed out after {timeout:?} waiting until {what}");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// A child process killed on drop.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The tests' plugin-less client key: made once per test process, owner-only,
/// with its trust line (`<key> client dispatch`) in `client.key.pub`.
pub struct ClientKey {
    /// The private key file.
    pub key: PathBuf,
    /// The trust file that lets nodes run the client's tasks.
    pub trust: PathBuf,
}

/// The headers of a task as protocol 2 carries it, made by hand from
/// `facts` and signed with `key` (which `facts` names): what a dispatcher
/// written from docs/protocol.md would send. Returns them with the seal.
pub fn task_headers(
    key: &anocast::anocast_wire::NodeKey,
    facts: &anocast::anocast_wire::TaskFacts,
) -> anyhow::Result<(Vec<(&'static str, String)>, anocast::anocast_wire::TaskSeal)> {
    let seal = facts.seal(key)?;
    let signature: String = seal.signature.iter().map(|b| format!("{b:02x}")).collect();
    let (ids, topics): (Vec<&str>, Vec<&str>) = facts.ancestry.iter().map(|(t, id)| (id.as_str(), t.as_str())).unzip();
    let mut headers = vec![
        ("Anocast-Protocol", "2".to_owned()),
        ("Anocast-Request-Id", facts.request_id.clone()),
        ("Anocast-Deadline", facts.deadline_ms.to_string()),
        ("Anocast-Depth", facts.ancestry.len().to_string()),
        ("Anocast-Ancestry", ids.join(",")),
        ("Anocast-Ancestry-Topics", topics.join(",")),
        ("Content-Type", facts.content_type.clone()),
        ("Anocast-Dispatcher", facts.dispatcher.clone()),
        ("Anocast-Key", facts.key.to_string()),
        ("Anocast-Root-Key", facts.root.to_string()),
        ("Anocast-Signature", signature),
    ];
    if !facts.expected.is_empty() {
        headers.push(("Anocast-Expected", facts.expected.join(",")));
    }
    Ok((headers, seal))
}

/// The id the tests' plugin-less clients dispatch as.
pub const CLIENT_ID: &str = "client";

/// The tests' client key (see [`ClientKey`]).
pub fn client_key() -> &'static ClientKey {
    static KEY: std::sync::OnceLock<ClientKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/tmp")
            .join(format!("client-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a folder for the client key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        }
        let key = dir.join("client.key");
        let node_key = anocast::anocast_wire::NodeKey::generate().expect("a key");
        anocast::trust::write_key(&key, &node_key, Some(CLIENT_ID), "dispatch").expect("the client key is written");
        ClientKey { trust: anocast::trust::public_key_path(&key), key }
    })
}

/// Starts `anocast serve` (the binary at `exe`) on a free port with `dir`
/// as plugins folder, trusting the tests' client key to dispatch; returns
/// the process and its base URL once it serves.
pub fn spawn_serve(exe: &str, dir: &Path, node_id: &str, extra: &[&str]) -> anyhow::Result<(Child, String)> {
    let mut args = vec!["serve", "--node-id", node_id, "--http", "127.0.0.1:0", "--plugins"];
    let dir = dir.to_str().ok_or_else(|| anyhow::anyhow!("non-UTF-8 path"))?;
    args.push(dir);
    let trust = client_key().trust.to_str().ok_or_else(|| anyhow::anyhow!("non-UTF-8 path"))?;
    args.extend_from_slice(&["--trust", trust]);
    args.extend_from_slice(extra);
    spawn_anocast(exe, &args, &[])
}

/// Starts the binary at `exe` with `args` and `envs`; returns the process
/// and the base URL of its HTTP API once it logs that it serves.
pub fn spawn_anocast(exe: &str, args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<(Child, String)> {
    use std::io::BufRead;
    let mut child = Child(
        std::process::Command::new(exe)
            .args(args)
            // Keys and compiled-code caches of nodes without --data-dir
            // go to a scratch folder, not the user's home.
            .env("XDG_DATA_HOME", std::env::temp_dir().join("anocast-tests-data"))
            .envs(envs.iter().copied())
            .env("ANOCAST_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .spawn()?,
    );
    let stderr = child.0.stderr.take().ok_or_else(|| anyhow::anyhow!("no stderr"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(url) = line.split("serving the HTTP API on ").nth(1) {
                let _ = tx.send(url.split_whitespace().next().unwrap_or_default().to_owned());
            }
        }
    });
    let url = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .map_err(|_| anyhow::anyhow!("anocast serve did not start"))?;
    Ok((child, url))
}

/// A plugin-less dispatcher in this process, joined to a mesh (trusting its
/// registered nodes), signing with the tests' client key, noticing dead
/// nodes after one second.
pub async fn mesh_client(nats: &str, redis: &str) -> anyhow::Result<Host> {
    mesh_client_with(nats, redis, |mesh| mesh.trust_mesh = true).await
}

/// A plugin-less dispatcher in this process, joined to a mesh, noticing dead
/// nodes after one second, its trust set by `trust`.
pub async fn mesh_client_with(
    nats: &str,
    redis: &str,
    trust: impl FnOnce(&mut anocast::MeshConfig),
) -> anyhow::Result<Host> {
    let mut mesh = anocast::MeshConfig::new(nats, redis);
    mesh.key = Some(client_key().key.clone());
    mesh.liveness = anocast::ledger::Liveness::from_ttl(std::time::Duration::from_secs(1));
    trust(&mut mesh);
    Host::start(HostConfig {
        plugins: None,
        node_id: CLIENT_ID.into(),
        runtime: RuntimeConfig::default(),
        mesh: Some(mesh),
        nesting: Default::default(),
        settle: Default::default(),
    })
    .await
}

#[cfg(test)]
mod tests {
    /// The runtime reads the stateless declaration `anocast-build` writes.
    #[test]
    fn the_host_and_the_build_name_the_same_stateless_section() {
        assert_eq!(anocast::runtime::STATELESS_SECTION, anocast_build::stateless::SECTION);
    }
}
