//! Real `redis-server` and `nats-server` processes for the distributed-mode
//! tests, each on a free port of its own (never the default ports), stopped
//! on drop, and restartable on the same port.

use std::io::{Read, Write};
use std::net::TcpStream;
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
}

impl Redis {
    /// Starts one on a free port.
    pub fn start() -> anyhow::Result<Self> {
        let mut redis = Redis { port: free_port()?, dir: tempfile::tempdir()?, child: None };
        redis.run()?;
        Ok(redis)
    }

    fn run(&mut self) -> anyhow::Result<()> {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start redis-server (run `cargo xtask test`, which installs it)")?;
        self.child = Some(Child(child));
        wait_ready("redis-server", self.port, |s| {
            let mut reply = [0u8; 7];
            s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
        })
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
}

impl Nats {
    /// Starts one on a free port.
    pub fn start() -> anyhow::Result<Self> {
        let mut nats = Nats { port: free_port()?, child: None };
        nats.run()?;
        Ok(nats)
    }

    fn run(&mut self) -> anyhow::Result<()> {
        let child = Command::new("nats-server")
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
