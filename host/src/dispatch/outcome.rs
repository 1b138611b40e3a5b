//! The outcome of a dispatch, and its JSON shape (the same in the CLI and
//! over HTTP):
//!
//! ```json
//! {"request_id": "...", "topic": "text.analyze", "status": "complete",
//!  "partials": [{"worker": "node/plugin@1.0.0", "ok": true, "payload": {...}, "error": null}],
//!  "missing": [], "untrusted": [], "busy": [], "refused": [], "staged": true, "settle": "commit",
//!  "elapsed_ms": 3}
//! ```
//!
//! `staged` says whether a worker (or a sub-task of one) staged writes;
//! `settle` is the decision taken for them (`commit` or `abort`), or `null`
//! when none was (a sub-task, or the `manual` policy). The decision is
//! published only when there may be writes to settle.
//!
//! `payload` is the worker's bytes as a JSON value when they are JSON, and as
//! a string (lossy UTF-8) otherwise.

use std::time::Duration;

use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::bus::Partial;

/// How a dispatch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Every worker that declared has replied.
    Complete,
    /// Nobody declared within the grace period.
    NoInterest,
    /// The deadline came first; `missing` names who did not reply.
    TimedOut,
    /// Every declared worker replied or was found lost (its node died);
    /// `missing` names the lost ones.
    Incomplete,
    /// Nobody declared, and some receivers were too busy to ask their
    /// plugins (`busy` names them): not "nobody is interested", but "try
    /// again later".
    Overloaded,
    /// Nobody declared, none was busy, and some receivers refused the
    /// dispatch because their node does not trust this dispatcher's key
    /// (`refused` names them): not "nobody is interested", but "you may
    /// not ask".
    Unauthorized,
}

impl Status {
    /// The status as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Complete => "complete",
            Status::NoInterest => "no_interest",
            Status::TimedOut => "timed_out",
            Status::Incomplete => "incomplete",
            Status::Overloaded => "overloaded",
            Status::Unauthorized => "unauthorized",
        }
    }
}

/// The joined result of one dispatch.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The dispatch's request id.
    pub request_id: String,
    /// The dispatch's topic.
    pub topic: String,
    /// How it ended.
    pub status: Status,
    /// One partial per worker that replied, sorted by worker.
    pub partials: Vec<Partial>,
    /// Declared workers that did not reply by the deadline.
    pub missing: Vec<String>,
    /// Interest list entries ignored because no trusted key signed them for
    /// this dispatch (distributed mode).
    pub untrusted: Vec<String>,
    /// Receivers that answered busy: their node had no room for the task,
    /// so their plugin was not asked (sorted).
    pub busy: Vec<String>,
    /// Receivers whose node does not trust this dispatcher's key to
    /// dispatch: nothing ran there (sorted).
    pub refused: Vec<String>,
    /// Whether a worker (or a sub-task of one) staged writes.
    pub staged: bool,
    /// The decision taken for the staged writes, if any.
    pub settle: Option<crate::bus::Decision>,
    /// Time from dispatch to outcome.
    pub elapsed: Duration,
}

impl Outcome {
    /// The outcome as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an outcome always serializes")
    }
}

impl Serialize for Outcome {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Outcome", 11)?;
        s.serialize_field("request_id", &self.request_id)?;
        s.serialize_field("topic", &self.topic)?;
        s.serialize_field("status", &self.status)?;
        s.serialize_field("partials", &self.partials.iter().map(PartialJson).collect::<Vec<_>>())?;
        s.serialize_field("missing", &self.missing)?;
        s.serialize_field("untrusted", &self.untrusted)?;
        s.serialize_field("busy", &self.busy)?;
        s.serialize_field("refused", &self.refused)?;
        s.serialize_field("staged", &self.staged)?;
        s.serialize_field("settle", &self.settle)?;
        s.serialize_field("elapsed_ms", &(self.elapsed.as_millis() as u64))?;
        s.end()
    }
}

struct PartialJson<'a>(&'a Partial);

impl Serialize for PartialJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let partial = self.0;
        let mut s = serializer.serialize_struct("Partial", 4)?;
        s.serialize_field("worker", &partial.worker.to_string())?;
        s.serialize_field("ok", &partial.result.is_ok())?;
        match &partial.result {
            Ok(bytes) => {
                match serde_json::from_slice::<&RawValue>(bytes) {
                    Ok(raw) => s.serialize_field("payload", raw)?,
                    Err(_) => s.serialize_field("payload", &String::from_utf8_lossy(bytes))?,
                }
                s.serialize_field("error", &None::<String>)?;
            }
            Err(error) => {
                s.serialize_field("payload", &None::<()>)?;
                s.serialize_field("error", error)?;
            }
        }
        s.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::WorkerId;

    fn worker(name: &str) -> WorkerId {
        WorkerId { node: "n1".into(), plugin: name.into(), version: "1.0.0".into() }
    }

    #[test]
    fn payloads_are_json_when_they_can_be() {
        let outcome = Outcome {
            request_id: "r1".into(),
            topic: "t.x".into(),
            status: Status::Complete,
            partials: vec![
                Partial { worker: worker("a"), result: Ok(br#"{"n": 1}"#.to_vec()), staged: true },
                Partial { worker: worker("b"), result: Ok(b"plain text".to_vec()), staged: false },
                Partial { worker: worker("c"), result: Err("boom".into()), staged: false },
            ],
            missing: vec![],
            untrusted: vec![],
            busy: vec![],
            refused: vec![],
            staged: true,
            settle: Some(crate::bus::Decision::Abort),
            elapsed: Duration::from_millis(12),
        };
        let json: serde_json::Value = serde_json::from_str(&outcome.to_json()).expect("valid JSON");
        assert_eq!(
            json,
            serde_json::json!({
                "request_id": "r1", "topic": "t.x", "status": "complete",
                "partials": [
                    {"worker": "n1/a@1.0.0", "ok": true, "payload": {"n": 1}, "error": null},
                    {"worker": "n1/b@1.0.0", "ok": true, "payload": "plain text", "error": null},
                    {"worker": "n1/c@1.0.0", "ok": false, "payload": null, "error": "boom"},
                ],
                "missing": [], "untrusted": [], "busy": [], "refused": [], "staged": true, "settle": "abort", "elapsed_ms": 12
            })
        );
    }
}
