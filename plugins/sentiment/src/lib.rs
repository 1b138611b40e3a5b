//! `sentiment`: a tiny lexicon-based sentiment score for `text.analyze`.
//! Interested only in text that contains at least one letter.

use anocast_sdk::{PluginInfo, Task, Worker, export, json, log};
use serde::Serialize;

const POSITIVE: &[&str] = &["good", "great", "love", "excellent", "happy", "fast", "nice", "thanks"];
const NEGATIVE: &[&str] = &["bad", "awful", "hate", "slow", "broken", "sad", "angry", "bug"];

struct Sentiment;

#[derive(Serialize)]
struct Verdict {
    score: i32,
    label: &'static str,
}

impl Worker for Sentiment {
    fn describe() -> PluginInfo {
        PluginInfo::new("sentiment", env!("CARGO_PKG_VERSION"), &["text.analyze"])
    }

    fn interested(task: Task) -> bool {
        task.text().chars().any(char::is_alphabetic)
    }

    fn handle(task: Task) -> Result<Vec<u8>, String> {
        let mut score = 0;
        for word in task.text().split(|c: char| !c.is_alphanumeric()) {
            let word = word.to_lowercase();
            score += i32::from(POSITIVE.contains(&word.as_str())) - i32::from(NEGATIVE.contains(&word.as_str()));
        }
        let label = match score {
            s if s > 0 => "positive",
            0 => "neutral",
            _ => "negative",
        };
        log::debug(&format!("score {score}"));
        json(&Verdict { score, label })
    }
}

export!(Sentiment);
