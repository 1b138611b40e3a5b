//! Real `redis-server` and `nats-server` processes for the distributed-mode
//! tests, each on a free port of its own (never the default ports), stopped
//! on drop, and restartable on the same port.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::Child;

/// A free TCP port on the loopback interface.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until `ready` says the server on `port` answers.
fn wait_ready(name: &str, port: u16, ready: impl Fn(&mut TcpStream) -> bool) -> anyhow::Result<()> {
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
            if ready(&mut stream) {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("{name} did not start on port {port}")
}

/// A `redis-server` that keeps nothing on disk.
pub struct Redis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Configuration beyond the defaults (authentication, TLS).
    extra: Vec<String>,
}

impl Redis {
    /// Starts one on a free port.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(|_, _| Vec::new())
    }

    /// Starts one on a free port with more arguments, made by `extra` from
    /// the port and a scratch folder. When they set `--tls-port` to the
    /// port, the plain port is turned off and only TLS is served.
    pub fn start_with(extra: impl FnOnce(u16, &Path) -> Vec<String>) -> anyhow::Result<Self> {
        let (port, dir) = (free_port()?, tempfile::tempdir()?);
        let extra = extra(port, dir.path());
        let mut redis = Redis { port, dir, child: None, extra };
        redis.run()?;
        Ok(redis)
    }

    fn run(&mut self) -> anyhow::Result<()> {
        let tls = self.extra.iter().any(|a| a == "--tls-port");
        let plain = if tls { "0".to_owned() } else { self.port.to_string() };
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &plain, "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start redis-server (run `cargo xtask test`, which installs it)")?;
        self.child = Some(Child(child));
        // A server with a password or TLS answers PING otherwise; that it
        // listens is enough.
        let open = self.extra.is_empty();
        wait_ready("redis-server", self.port, |s| {
            let mut reply = [0u8; 7];
            !open || (s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n")
        })
    }

    /// The port it serves on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (its data is gone).
    pub fn stop(&mut self) {
        self.child = None;
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.run()
    }

    /// Every key matching `anocast:*` with its remaining time-to-live in ms
    /// (-1: none, as Redis's PTTL says).
    pub async fn anocast_keys(&self) -> anyhow::Result<Vec<(String, i64)>> {
        let client = redis::Client::open(self.url())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let keys: Vec<String> = redis::cmd("KEYS").arg("anocast:*").query_async(&mut conn).await?;
        let mut out = Vec::new();
        for key in keys {
            let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut conn).await?;
            out.push((key, ttl));
        }
        Ok(out)
    }

    /// Fails if any key the project wrote has no time-to-live.
    pub async fn assert_every_key_expires(&self) -> anyhow::Result<()> {
        let keys = self.anocast_keys().await?;
        let forever: Vec<_> = keys.iter().filter(|(_, ttl)| *ttl == -1).collect();
        if !forever.is_empty() {
            bail!("keys without a time-to-live: {forever:?}");
        }
        Ok(())
    }
}

/// A `nats-server` (core NATS, no persistence).
pub struct Nats {
    port: u16,
    child: Option<Child>,
    /// A configuration file (authentication, TLS), if any.
    config: Option<tempfile::NamedTempFile>,
}

impl Nats {
    /// Starts one on a free port.
    pub fn start() -> anyhow::Result<Self> {
        let mut nats = Nats { port: free_port()?, child: None, config: None };
        nats.run()?;
        Ok(nats)
    }

    /// Starts one on a free port with this configuration file's text
    /// (nats-server's format; the address and port come from here).
    pub fn start_with_config(text: &str) -> anyhow::Result<Self> {
        let mut file = tempfile::NamedTempFile::new()?;
        file.write_all(text.as_bytes())?;
        let mut nats = Nats { port: free_port()?, child: None, config: Some(file) };
        nats.run()?;
        Ok(nats)
    }

    /// The port it serves on.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn run(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new("nats-server");
        if let Some(file) = &self.config {
            command.arg("-c").arg(file.path());
        }
        let child = command
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start nats-server (run `cargo xtask test`, which installs it)")?;
        self.child = Some(Child(child));
        wait_ready("nats-server", self.port, |s| {
            let mut greeting = [0u8; 4];
            s.read_exact(&mut greeting).is_ok() && &greeting == b"INFO"
        })
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server.
    pub fn stop(&mut self) {
        self.child = None;
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.run()
    }
}
