//! `warm`: a plugin that declares itself stateless (`export!(Warm,
//! stateless)`) but, for the tests' sake, counts in a global how many tasks
//! its instance has served, so that a test can see whether the host reused
//! a warm instance. On `warm.count` it answers that number; on `warm.trap`
//! it panics; on `warm.spin` it loops until it is stopped.

use std::sync::atomic::{AtomicU64, Ordering};

use anocast_sdk::{PluginInfo, Task, Worker, export};

static SERVED: AtomicU64 = AtomicU64::new(0);

struct Warm;

impl Worker for Warm {
    fn describe() -> PluginInfo {
        PluginInfo::new("warm", "0.1.0", &["warm.*"])
    }

    fn interested(_task: Task) -> bool {
        true
    }

    fn handle(task: Task) -> Result<Vec<u8>, String> {
        let served = SERVED.fetch_add(1, Ordering::Relaxed) + 1;
        match task.topic.as_str() {
            "warm.trap" => panic!("trapping after {served} tasks"),
            "warm.spin" => loop {
                std::hint::black_box(served);
            },
            _ => Ok(served.to_string().into_bytes()),
        }
    }
}

export!(Warm, stateless);
