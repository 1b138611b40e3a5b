//! `word-count`: answers every `text.analyze` task with word, line and
//! character counts. Joined with `sentiment` in the demo's fan-out.

use anocast_sdk::{PluginInfo, Task, Worker, export, json};
use serde::Serialize;

struct WordCount;

#[derive(Serialize)]
struct Counts {
    words: usize,
    lines: usize,
    chars: usize,
}

impl Worker for WordCount {
    fn describe() -> PluginInfo {
        PluginInfo::new("word-count", env!("CARGO_PKG_VERSION"), &["text.analyze"])
    }

    fn interested(task: Task) -> bool {
        !task.payload.is_empty()
    }

    fn handle(task: Task) -> Result<Vec<u8>, String> {
        let text = task.text();
        json(&Counts {
            words: text.split_whitespace().count(),
            lines: text.lines().count(),
            chars: text.chars().count(),
        })
    }
}

export!(WordCount, stateless);
