//! `misbehave`: does, on request, everything a plugin must not be able to
//! hurt the host with. The last token of the topic says what:
//!
//! - `ok`: answers "fine"; `fail`: returns an error; `echo`: the payload;
//! - `trap`: panics; `spin`: loops forever; `grow`: allocates until the
//!   memory limit; `recurse`: recurses until the stack runs out;
//! - `sleep`: sleeps for the number of milliseconds in the payload;
//! - `hold`: takes the MiB of memory the payload says (`MIB` or
//!   `MIB,MS`), holds it for MS milliseconds (default 1000), then answers;
//! - `log`: writes to the host log, stdout and stderr;
//! - `binary`: answers bytes that are not UTF-8.
//!
//! - `sandbox`: reports what it can see of the environment, the filesystem
//!   and the network (it should see nothing).
//!
//! `misbehave.not-interested` is declined; `misbehave.interested-trap`
//! panics in `interested`; `misbehave.dispatch-in-interested` tries to
//! dispatch a sub-task and to stage a write from `interested`, and is
//! interested (answering "refused") only if the host refused both. On `race.>` it takes 200 ms (or the number of
//! milliseconds in the payload) to decide that it is interested, then
//! answers "slow" (the fast `echo` answers the same topic).

use std::hint::black_box;

use anocast_sdk::{PluginInfo, Task, Worker, export, log};

struct Misbehave;

#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    // Locals only (no shadow-stack array), so that the wasm stack itself,
    // not the guest's stack in linear memory, runs out.
    black_box(recurse(black_box(depth + 1))) + 1
}

impl Worker for Misbehave {
    fn describe() -> PluginInfo {
        PluginInfo::new("misbehave", "0.1.0", &["misbehave.>", "race.>"])
    }

    fn interested(task: Task) -> bool {
        if task.topic.starts_with("race.") {
            // A payload that is a number of milliseconds sets the delay.
            let delay = task.text().trim().parse().unwrap_or(200);
            std::thread::sleep(std::time::Duration::from_millis(delay));
            return true;
        }
        match task.topic.as_str() {
            "misbehave.interested-trap" => panic!("cannot make up my mind"),
            "misbehave.not-interested" => false,
            "misbehave.dispatch-in-interested" => {
                let dispatched = anocast_sdk::dispatch("echo.from-interested", b"");
                let staged = anocast_sdk::store::set("k", b"v");
                log::info(&format!("{dispatched:?} {staged:?}"));
                dispatched.is_err() && staged.is_err()
            }
            _ => true,
        }
    }

    fn handle(task: Task) -> Result<Vec<u8>, String> {
        if task.topic.starts_with("race.") {
            return Ok(b"slow".to_vec());
        }
        match task.topic.rsplit('.').next().unwrap_or_default() {
            "ok" => Ok(b"fine".to_vec()),
            "dispatch-in-interested" => Ok(b"refused".to_vec()),
            "fail" => Err("failed on purpose".into()),
            "echo" => Ok(task.payload),
            "trap" => panic!("boom on purpose"),
            "spin" => {
                let mut n = 0u64;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            "grow" => {
                let mut hoard = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                }
            }
            "recurse" => Ok(recurse(0).to_le_bytes().to_vec()),
            "hold" => {
                let text = task.text();
                let (mib, ms) = text.trim().split_once(',').unwrap_or((text.trim(), "1000"));
                let bad = |_| "payload must be MIB or MIB,MS".to_string();
                let (mib, ms): (usize, u64) = (mib.parse().map_err(bad)?, ms.parse().map_err(bad)?);
                let hoard: Vec<Vec<u8>> = (0..mib).map(|_| black_box(vec![1u8; 1 << 20])).collect();
                std::thread::sleep(std::time::Duration::from_millis(ms));
                Ok(format!("held {} MiB", black_box(hoard).len()).into_bytes())
            }
            "sleep" => {
                let ms: u64 = task.text().trim().parse().map_err(|_| "payload must be milliseconds".to_string())?;
                std::thread::sleep(std::time::Duration::from_millis(ms));
                Ok(format!("slept {ms} ms").into_bytes())
            }
            "log" => {
                log::info("hello from the guest log");
                println!("hello from guest stdout");
                eprintln!("hello from guest stderr");
                Ok(b"logged".to_vec())
            }
            "binary" => Ok(vec![0xff, 0xfe, 0x00]),
            "sandbox" => {
                let env = std::env::vars().count();
                let args = std::env::args().count();
                let fs = match std::fs::read_dir("/") {
                    Ok(_) => "readable".to_string(),
                    Err(e) => format!("denied: {e}"),
                };
                let cwd = std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default();
                let net = match std::net::TcpStream::connect("127.0.0.1:80") {
                    Ok(_) => "connected".to_string(),
                    Err(e) => format!("denied: {e}"),
                };
                Ok(format!(r#"{{"env": {env}, "args": {args}, "fs": {fs:?}, "cwd": {cwd:?}, "net": {net:?}}}"#)
                    .into_bytes())
            }
            other => Err(format!("unknown misbehaviour {other:?}")),
        }
    }
}

export!(Misbehave);
