//! How tasks and replies travel as NATS messages: metadata in headers, the
//! payload (or a partial's bytes, or its error text) as the body.
//!
//! | message | subject | headers |
//! |---|---|---|
//! | task | `anocast.task.<topic>`, reply subject = the dispatcher's inbox | `Anocast-Request-Id`, `Anocast-Deadline` (Unix ms), `Anocast-Depth`, `Anocast-Ancestry` (comma-separated request ids), `Anocast-Ancestry-Topics` (their topics), `Content-Type`, `Anocast-Expected` (comma-separated plugin groups, optional) |
//! | reply | the inbox | none: the body is a signed envelope (`anocast_wire::envelope`) |
//! | settle | `anocast.settle` | `Anocast-Request-Id` (the transaction), `Anocast-Decision` (`commit` or `abort`); empty body |
//!
//! Decoding is strict: a message missing a header or carrying a malformed
//! one is refused with a reason, never half-read. `docs/protocol.md` has
//! the whole protocol.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::HeaderMap;
use bytes::Bytes;

use anocast_wire::names;

use super::{Ancestor, Decision, Task};
use crate::topic::Topic;

/// The subject of settle decisions.
pub const SETTLE_SUBJECT: &str = "anocast.settle";
const DECISION: &str = "Anocast-Decision";

/// Headers of a settle decision.
pub fn encode_settle(transaction: &str, decision: Decision) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(REQUEST_ID, transaction);
    headers.insert(DECISION, decision.as_str());
    headers
}

/// Reads a settle decision.
pub fn decode_settle(headers: Option<&HeaderMap>) -> Result<(Arc<str>, Decision), WireError> {
    let transaction = header(headers, REQUEST_ID)?;
    names::check_request_id(transaction)?;
    let decision = header(headers, DECISION)?;
    let decision = Decision::parse(decision).ok_or_else(|| WireError(format!("bad decision {decision:?}")))?;
    Ok((Arc::from(transaction), decision))
}

/// Prefix of every task subject.
pub const TASK_PREFIX: &str = "anocast.task.";

const REQUEST_ID: &str = "Anocast-Request-Id";
const DEADLINE: &str = "Anocast-Deadline";
const DEPTH: &str = "Anocast-Depth";
const ANCESTRY: &str = "Anocast-Ancestry";
const ANCESTRY_TOPICS: &str = "Anocast-Ancestry-Topics";
const CONTENT_TYPE: &str = "Content-Type";
const EXPECTED: &str = "Anocast-Expected";

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed message: {0}")]
pub struct WireError(String);

impl From<names::NameError> for WireError {
    fn from(err: names::NameError) -> Self {
        WireError(err.to_string())
    }
}

/// The one value of header `name` (names are case-sensitive); a header
/// given twice is refused, so that no two readers can see different values.
fn optional<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Result<Option<&'a str>, WireError> {
    let Some(headers) = headers else { return Ok(None) };
    let mut values = headers.get_all(name);
    let first = values.next().map(|v| v.as_str());
    if values.next().is_some() {
        return Err(WireError(format!("the {name} header is repeated")));
    }
    Ok(first)
}

fn header<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Result<&'a str, WireError> {
    optional(headers, name)?.ok_or_else(|| WireError(format!("no {name} header")))
}

/// The subject a task on `topic` is published on.
pub fn task_subject(topic: &str) -> String {
    format!("{TASK_PREFIX}{topic}")
}

/// Headers and body of a task.
pub fn encode_task(task: &Task) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    headers.insert(REQUEST_ID, &*task.request_id);
    headers.insert(DEADLINE, unix_ms(task.deadline).to_string().as_str());
    headers.insert(DEPTH, task.depth.to_string().as_str());
    let ids: Vec<&str> = task.ancestry.iter().map(|a| &*a.request_id).collect();
    headers.insert(ANCESTRY, ids.join(",").as_str());
    let topics: Vec<&str> = task.ancestry.iter().map(|a| a.topic.as_str()).collect();
    headers.insert(ANCESTRY_TOPICS, topics.join(",").as_str());
    headers.insert(CONTENT_TYPE, task.content_type.as_str());
    if !task.expected.is_empty() {
        headers.insert(EXPECTED, task.expected.join(",").as_str());
    }
    (headers, Bytes::copy_from_slice(&task.payload))
}

/// Reads a task from a message received on `subject`.
pub fn decode_task(subject: &str, headers: Option<&HeaderMap>, body: &[u8]) -> Result<Task, WireError> {
    let topic =
        subject.strip_prefix(TASK_PREFIX).ok_or_else(|| WireError(format!("{subject} is not a task subject")))?;
    let topic = Topic::parse(topic).map_err(|e| WireError(e.to_string()))?;
    let request_id = header(headers, REQUEST_ID)?;
    names::check_request_id(request_id)?;
    let deadline: u64 = header(headers, DEADLINE)?.parse().map_err(|_| WireError("bad deadline".into()))?;
    let depth: u32 = header(headers, DEPTH)?.parse().map_err(|_| WireError("bad depth".into()))?;
    let ancestry = decode_ancestry(header(headers, ANCESTRY)?, header(headers, ANCESTRY_TOPICS)?)?;
    if ancestry.len() != depth as usize {
        return Err(WireError(format!("depth {depth} but {} ancestors", ancestry.len())));
    }
    Ok(Task {
        topic,
        request_id: Arc::from(request_id),
        payload: body.to_vec(),
        content_type: header(headers, CONTENT_TYPE).unwrap_or("application/octet-stream").to_owned(),
        deadline: UNIX_EPOCH + Duration::from_millis(deadline),
        depth,
        ancestry,
        expected: match optional(headers, EXPECTED)? {
            Some(names) if !names.is_empty() => names
                .split(',')
                .map(|name| {
                    names::check_plugin_name(name).map_err(|_| WireError("bad expected group".into()))?;
                    Ok(name.to_owned())
                })
                .collect::<Result<_, WireError>>()?,
            _ => Vec::new(),
        },
    })
}

/// Pairs the ancestors' request ids with their topics.
fn decode_ancestry(ids: &str, topics: &str) -> Result<Vec<Ancestor>, WireError> {
    if ids.is_empty() && topics.is_empty() {
        return Ok(Vec::new());
    }
    let (ids, topics): (Vec<&str>, Vec<&str>) = (ids.split(',').collect(), topics.split(',').collect());
    if ids.len() != topics.len() {
        return Err(WireError(format!("{} ancestor ids but {} ancestor topics", ids.len(), topics.len())));
    }
    ids.into_iter()
        .zip(topics)
        .map(|(id, topic)| {
            names::check_request_id(id)?;
            let topic = Topic::parse(topic).map_err(|e| WireError(format!("ancestry: {e}")))?;
            Ok(Ancestor { topic, request_id: Arc::from(id) })
        })
        .collect()
}

/// Unix milliseconds of `time`.
pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> Task {
        Task {
            topic: Topic::parse("orders.created").expect("topic"),
            request_id: Arc::from("r-1"),
            payload: b"{\"amount\": 3}".to_vec(),
            content_type: "application/json".into(),
            deadline: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            depth: 2,
            ancestry: vec![
                Ancestor { topic: Topic::parse("orders.placed").expect("topic"), request_id: Arc::from("a") },
                Ancestor { topic: Topic::parse("stock.reserve").expect("topic"), request_id: Arc::from("b") },
            ],
            expected: vec!["echo".into(), "misbehave".into()],
        }
    }

    #[test]
    fn tasks_round_trip() {
        let original = task();
        let (headers, body) = encode_task(&original);
        let decoded = decode_task("anocast.task.orders.created", Some(&headers), &body).expect("decodes");
        assert_eq!(decoded.topic, original.topic);
        assert_eq!(decoded.request_id, original.request_id);
        assert_eq!(decoded.payload, original.payload);
        assert_eq!(decoded.content_type, original.content_type);
        assert_eq!(decoded.deadline, original.deadline);
        assert_eq!(decoded.depth, 2);
        assert_eq!(decoded.ancestry, original.ancestry);
        assert_eq!(decoded.expected, ["echo", "misbehave"]);
    }

    #[test]
    fn settle_decisions_round_trip_and_bad_ones_are_refused() {
        let headers = encode_settle("r-1", Decision::Commit);
        assert_eq!(decode_settle(Some(&headers)), Ok((Arc::from("r-1"), Decision::Commit)));
        let headers = encode_settle("r-1", Decision::Abort);
        assert_eq!(decode_settle(Some(&headers)), Ok((Arc::from("r-1"), Decision::Abort)));
        for (name, bad) in [(DECISION, "maybe"), (REQUEST_ID, ""), (REQUEST_ID, "a,b")] {
            let mut headers = encode_settle("r-1", Decision::Commit);
            headers.insert(name, bad);
            assert!(decode_settle(Some(&headers)).is_err(), "{name}: {bad:?} was accepted");
        }
        assert!(decode_settle(None).is_err());
    }

    #[test]
    fn malformed_messages_are_refused() {
        let (headers, body) = encode_task(&task());
        assert!(decode_task("anocast.task.a..b", Some(&headers), &body).is_err());
        assert!(decode_task("other.subject", Some(&headers), &body).is_err());
        assert!(decode_task("anocast.task.a", None, &body).is_err());
        for (name, bad) in [
            (DEADLINE, "soon"),
            (DEPTH, "1"),
            (ANCESTRY, "a"),
            (ANCESTRY, "a,,b"),
            (ANCESTRY_TOPICS, "orders.placed"),
            (ANCESTRY_TOPICS, "orders.placed,stock..reserve"),
        ] {
            let (mut headers, body) = encode_task(&task());
            headers.insert(name, bad);
            let refused = decode_task("anocast.task.a", Some(&headers), &body);
            assert!(refused.is_err(), "{name}: {bad} was accepted");
        }
        let mut without = HeaderMap::new();
        for (name, values) in headers.iter().filter(|(name, _)| name.to_string() != ANCESTRY_TOPICS) {
            for value in values {
                without.insert(name.clone(), value.clone());
            }
        }
        assert!(decode_task("anocast.task.a", Some(&without), &body).is_err(), "the ancestors' topics are required");
    }

    #[test]
    fn repeated_and_miscased_headers_are_refused_and_an_empty_expected_is_absent() {
        for name in [REQUEST_ID, DEADLINE, EXPECTED] {
            let (mut headers, body) = encode_task(&task());
            let value = headers.get(name).map(|v| v.as_str().to_owned()).unwrap_or_else(|| "echo".into());
            headers.append(name, value.as_str());
            headers.append(name, value.as_str());
            let err = decode_task("anocast.task.a", Some(&headers), &body).expect_err("repeated");
            assert!(err.to_string().contains("is repeated"), "{name}: {err}");
        }
        let (headers, body) = encode_task(&task());
        let mut lower = HeaderMap::new();
        for (name, values) in headers.iter() {
            for value in values {
                lower.insert(name.to_string().to_lowercase().as_str(), value.clone());
            }
        }
        assert!(decode_task("anocast.task.a", Some(&lower), &body).is_err(), "header names are case-sensitive");
        let (mut headers, body) = encode_task(&task());
        headers.insert(EXPECTED, "");
        let task = decode_task("anocast.task.a", Some(&headers), &body).expect("an empty list is no list");
        assert!(task.expected.is_empty());
    }
}
